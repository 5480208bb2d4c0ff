"""The API under abuse: what a hostile or careless client sends is a clear 4xx, never a 5xx,
and a refused request writes nothing (the whole database is the same before and after).

Each group pins one finding of issue 12; the fuzzing of every operation is in
test_openapi_fuzz.py, the rate limits in test_rate_limits.py.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import EVENT, without_queue_records
from tests.e2e.test_api import assert_problem, buy, key
from tests.e2e.test_api_inventory import hold

RESERVED = ["__x__", "__name__", "__key__"]


def refused_and_nothing_written(dump, request, status=None, code=None):
    """Send ``request()``; it must be a 4xx (``status``/``code`` when given) that changed nothing."""
    before = dump()
    r = request()
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    if status is not None:
        assert_problem(r, status, code)
    after = dump()
    if r.status_code == 409:
        before, after = without_queue_records(before), without_queue_records(after)
    assert after == before, r.text
    return r


# --- 1. reserved document ids ------------------------------------------------------------------


@pytest.mark.parametrize("bad", RESERVED)
def test_reserved_ids_are_refused_on_every_route_taking_an_id(http, user, event_of, dump, bad):
    org = user(organiser=True)
    ev = event_of(org)
    buyer = user()
    order = buy(http, buyer, ev["id"]).json()
    k = {"Idempotency-Key": key()}
    requests = {
        "show event": lambda: http.get(f"/v1/events/{bad}"),
        "list events after": lambda: http.get("/v1/events", params={"after": bad}),
        "patch event": lambda: http.patch(f"/v1/events/{bad}", json={"name": "x"}, headers=org.headers),
        "purchase body": lambda: http.post("/v1/purchases", json={"event_id": bad, "quantity": 1},
                                           headers=buyer.headers | k),
        "hold body": lambda: http.post("/v1/holds", json={"event_id": bad, "quantity": 1},
                                       headers=buyer.headers | k),
        "show order": lambda: http.get(f"/v1/orders/{bad}", headers=buyer.headers),
        "list orders after": lambda: http.get("/v1/orders", params={"after": bad}, headers=buyer.headers),
        "cancel order": lambda: http.post(f"/v1/orders/{bad}/cancel", headers=buyer.headers),
        "cancel ticket ids": lambda: http.post(f"/v1/orders/{order['id']}/cancel", json={"ticket_ids": [bad]},
                                               headers=buyer.headers),
        "show hold": lambda: http.get(f"/v1/holds/{bad}", headers=buyer.headers),
        "confirm hold": lambda: http.post(f"/v1/holds/{bad}/confirm", headers=buyer.headers),
        "release hold": lambda: http.post(f"/v1/holds/{bad}/release", headers=buyer.headers),
        "join waitlist": lambda: http.put(f"/v1/events/{bad}/waitlist", headers=buyer.headers),
        "leave waitlist": lambda: http.delete(f"/v1/events/{bad}/waitlist", headers=buyer.headers),
        "release tickets": lambda: http.post(f"/v1/events/{bad}/releases", json={"quantity": 1},
                                             headers=org.headers),
        "sale status": lambda: http.put(f"/v1/events/{bad}/sale-status", json={"status": "paused"},
                                        headers=org.headers),
        "dashboard": lambda: http.get(f"/v1/events/{bad}/dashboard", headers=org.headers),
    }
    for what, request in requests.items():
        before = dump()
        r = request()
        assert r.status_code in (404, 422), (what, r.status_code, r.text)
        assert dump() == before, what


# --- 2. drafts are their organiser's alone ------------------------------------------------------


def test_a_draft_is_visible_only_to_its_organiser(http, user, event_of, dump):
    org = user(organiser=True)
    draft = event_of(org, on_sale=False)
    public = event_of(org)
    other_org, buyer = user(organiser=True), user()
    for headers in ({}, buyer.headers, other_org.headers):
        assert_problem(http.get(f"/v1/events/{draft['id']}", headers=headers), 404, "event_not_found")
        listed = [e["id"] for e in http.get("/v1/events", headers=headers).json()["events"]]
        assert listed == [public["id"]]
    assert_problem(http.get("/v1/events", params={"after": draft["id"]}), 404, "event_not_found")
    shown = http.get(f"/v1/events/{draft['id']}", headers=org.headers)
    assert shown.status_code == 200 and shown.json()["status"] == "draft"
    # every other door answers as for a missing event, and writes nothing
    refused_and_nothing_written(dump, lambda: buy(http, buyer, draft["id"]), 404, "event_not_found")
    refused_and_nothing_written(dump, lambda: hold(http, buyer, draft["id"]), 404, "event_not_found")
    refused_and_nothing_written(dump, lambda: http.put(f"/v1/events/{draft['id']}/waitlist", headers=buyer.headers),
                                404, "event_not_found")
    refused_and_nothing_written(dump, lambda: http.patch(f"/v1/events/{draft['id']}", json={"name": "Mine"},
                                                         headers=other_org.headers), 404, "event_not_found")
    refused_and_nothing_written(dump, lambda: http.post(f"/v1/events/{draft['id']}/releases", json={"quantity": 1},
                                                        headers=other_org.headers), 404, "event_not_found")
    refused_and_nothing_written(dump, lambda: http.put(f"/v1/events/{draft['id']}/sale-status",
                                                       json={"status": "on_sale"}, headers=other_org.headers),
                                404, "event_not_found")
    assert_problem(http.get(f"/v1/events/{draft['id']}/dashboard", headers=other_org.headers), 404, "event_not_found")


# --- 4. production mode with emulator variables --------------------------------------------------


@pytest.mark.parametrize("variable", ["FIREBASE_AUTH_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST",
                                      "PUBSUB_EMULATOR_HOST"])
def test_production_refuses_to_start_with_an_emulator_variable(variable, tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env |= {variable: "127.0.0.1:9", "GOOGLE_CLOUD_PROJECT": "demo-boxoffice",
            "BOXOFFICE_STATE_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "boxoffice.cli", "serve", "--production", "--port", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"serve --production kept running with {variable} set")
    assert proc.returncode == 2, err
    assert variable in err


def test_the_app_refuses_to_build_in_production_with_an_emulator_variable(monkeypatch):
    from boxoffice.api.app import ProductionMisconfigured, create_app

    monkeypatch.setenv("BOXOFFICE_PRODUCTION", "1")
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9")
    with pytest.raises(ProductionMisconfigured, match="FIREBASE_AUTH_EMULATOR_HOST"):
        create_app(db=object(), verify_token=lambda token: None)


# --- 5. a deleted or disabled user is refused at once ---------------------------------------------


@pytest.mark.parametrize("how", ["delete", "disable"])
def test_a_deleted_or_disabled_user_is_refused_at_once(http, user, event_of, auth_emulator, stack, dump, how):
    from boxoffice.runtime.emulator_users import delete_user, disable_user

    ev = event_of(user(organiser=True))
    buyer = user()
    assert buy(http, buyer, ev["id"]).status_code == 201  # the server has seen this user just now
    (delete_user if how == "delete" else disable_user)(auth_emulator.host, stack.project, buyer.uid)
    refused_and_nothing_written(dump, lambda: buy(http, buyer, ev["id"]), 401, "unauthenticated")
    assert_problem(http.get("/v1/orders", headers=buyer.headers), 401, "unauthenticated")


# --- 6 and 13. the hold-confirmation order cannot be taken by an Idempotency-Key ------------------


def test_an_idempotency_key_cannot_take_the_order_of_a_hold(http, user, event_of, db):
    ev = event_of(user(organiser=True))
    buyer = user()
    h = hold(http, buyer, ev["id"], 2).json()
    squatter = buy(http, buyer, ev["id"], 1, k=f"hold:{h['id']}")
    assert squatter.status_code == 201, squatter.text
    confirmed = http.post(f"/v1/holds/{h['id']}/confirm", headers=buyer.headers)
    assert confirmed.status_code == 201, confirmed.text
    assert "idempotent-replayed" not in confirmed.headers
    order = confirmed.json()
    assert order["id"] != squatter.json()["id"] and order["quantity"] == 2
    shown = http.get(f"/v1/holds/{h['id']}", headers=buyer.headers).json()
    assert (shown["status"], shown["order_id"]) == ("confirmed", order["id"])
    buyer_doc = db.collection("events").document(ev["id"]).collection("buyers").document(buyer.uid).get()
    assert (buyer_doc.get("held"), buyer_doc.get("tickets")) == (0, 3)


@pytest.mark.parametrize("length", [124, 126, 128])
def test_a_long_hold_id_is_not_found(http, user, dump, length):
    buyer = user()
    long_id = "h" * length
    for request in (lambda: http.get(f"/v1/holds/{long_id}", headers=buyer.headers),
                    lambda: http.post(f"/v1/holds/{long_id}/confirm", headers=buyer.headers),
                    lambda: http.post(f"/v1/holds/{long_id}/release", headers=buyer.headers)):
        refused_and_nothing_written(dump, request, 404, "hold_not_found")


# --- 7. no coercion ---------------------------------------------------------------------------------


@pytest.mark.parametrize("quantity", ["1", 1.0, True, "one", None, [1]])
def test_a_quantity_must_be_a_json_integer(http, user, event_of, dump, quantity):
    ev = event_of(user(organiser=True))
    buyer = user()
    body = {"event_id": ev["id"], "quantity": quantity}
    for path in ("/v1/purchases", "/v1/holds"):
        refused_and_nothing_written(
            dump, lambda path=path: http.post(path, json=body, headers=buyer.headers | {"Idempotency-Key": key()}),
            422, "invalid_request")
    refused_and_nothing_written(
        dump, lambda: http.post(f"/v1/events/{ev['id']}/releases", json={"quantity": quantity},
                                headers=ev.owner.headers), 422, "invalid_request")


@pytest.mark.parametrize("field,value", [
    ("price", "100"), ("price", 100.0), ("price", True), ("capacity", "5"), ("per_order_max", 2.0),
    ("on_sale", "yes"), ("on_sale", 1), ("starts_at", 0), ("starts_at", 1893456000), ("hold_minutes", "10"),
])
def test_event_fields_are_not_coerced(http, user, event_of, dump, field, value):
    org = user(organiser=True)
    refused_and_nothing_written(dump, lambda: http.post("/v1/events", json=EVENT | {field: value},
                                                        headers=org.headers), 422, "invalid_request")
    if field not in ("capacity", "on_sale"):
        ev = event_of(org)
        refused_and_nothing_written(dump, lambda: http.patch(f"/v1/events/{ev['id']}", json={field: value},
                                                             headers=org.headers), 422, "invalid_request")


# --- 8. dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("starts_at", [
    "2020-01-01T20:00:00+00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00Z",
])
def test_a_start_in_the_past_or_out_of_range_is_422(http, user, event_of, dump, starts_at):
    org = user(organiser=True)
    refused_and_nothing_written(dump, lambda: http.post("/v1/events", json=EVENT | {"starts_at": starts_at},
                                                        headers=org.headers), 422, "invalid_request")
    ev = event_of(org)
    refused_and_nothing_written(dump, lambda: http.patch(f"/v1/events/{ev['id']}", json={"starts_at": starts_at},
                                                         headers=org.headers), 422, "invalid_request")


# --- 9. names and venues ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "Gig\x00", "\u200b", "\u200b\u200d", "Line\r\nbreak", "Tab\tbed", "\u202eevil", "\ufeff", "bell\x07",
    "sep\u2028arator", "   ",
])
def test_names_and_venues_refuse_control_and_invisible_characters(http, user, event_of, dump, text):
    org = user(organiser=True)
    ev = event_of(org)
    for field in ("name", "venue"):
        refused_and_nothing_written(dump, lambda field=field: http.post("/v1/events", json=EVENT | {field: text},
                                                            headers=org.headers), 422, "invalid_request")
        refused_and_nothing_written(dump, lambda field=field: http.patch(f"/v1/events/{ev['id']}", json={field: text},
                                                             headers=org.headers), 422, "invalid_request")


def test_names_in_any_script_and_emoji_sequences_are_accepted(http, user, event_of):
    org = user(organiser=True)
    for name in ("Zoë & the Ünicode Band", "家族 👨\u200d👩\u200d👧 concert", "مهرجان\u200cموسيقى", "Ночь"):
        assert event_of(org, name=name)["name"] == name


# --- 10. refused requests write nothing; addresses only when verified -------------------------------


def test_refused_requests_of_a_new_user_write_nothing(http, user, event_of, dump):
    ev = event_of(user(organiser=True), capacity=1, per_order_max=1, per_user_limit=1)
    assert buy(http, user(verified=True), ev["id"]).status_code == 201  # now sold out
    newcomer = user(verified=True)
    k = {"Idempotency-Key": key()}
    for status, code, request in [
        (422, "invalid_request", lambda: http.post("/v1/purchases", json={"event_id": ev["id"], "quantity": 0},
                                                   headers=newcomer.headers | k)),
        (428, "idempotency_key_required", lambda: http.post("/v1/purchases", json={"event_id": ev["id"],
                                                                                  "quantity": 1},
                                                            headers=newcomer.headers)),
        (404, "event_not_found", lambda: buy(http, newcomer, "ev_missing")),
        (409, "sold_out", lambda: buy(http, newcomer, ev["id"])),
        (409, "sold_out", lambda: hold(http, newcomer, ev["id"])),
        (404, "hold_not_found", lambda: http.post("/v1/holds/h_nope/confirm", headers=newcomer.headers)),
        (404, "event_not_found", lambda: http.put("/v1/events/ev_missing/waitlist", headers=newcomer.headers)),
    ]:
        refused_and_nothing_written(dump, request, status, code)


def test_only_a_verified_address_is_put_on_file(http, user, event_of, db):
    ev = event_of(user(organiser=True))
    unverified, verified = user(), user(verified=True)
    assert buy(http, unverified, ev["id"]).status_code == 201
    assert buy(http, verified, ev["id"]).status_code == 201
    assert not db.collection("users").document(unverified.uid).get().exists
    assert db.collection("users").document(verified.uid).get().to_dict()["email"] == verified.email


# --- 11. anonymous reads use the summary ---------------------------------------------------------


def test_anonymous_event_reads_are_the_summary_and_the_organiser_sees_live_counts(http, user, event_of):
    ev = event_of(user(organiser=True))
    assert buy(http, user(), ev["id"], 2).status_code == 201
    # no inventory trigger runs in this test: the summary still says what the event started with
    for headers in ({}, user().headers):
        shown = http.get(f"/v1/events/{ev['id']}", headers=headers).json()["availability"]
        assert shown == {"available": 20, "held": 0, "sold": 0, "capacity": 20, "live": False, "types": None}
    live = http.get(f"/v1/events/{ev['id']}", headers=ev.owner.headers).json()["availability"]
    assert live == {"available": 18, "held": 0, "sold": 2, "capacity": 20, "live": True, "types": None}


# --- 12. concurrent cancels all answer the state after the cancellation ------------------------------


def test_concurrent_cancels_all_answer_cancelled(http, user, event_of, api):
    ev = event_of(user(organiser=True))
    buyer = user()
    order = buy(http, buyer, ev["id"], 4).json()

    def cancel(_: int) -> httpx.Response:
        with httpx.Client(base_url=api, timeout=60) as c:
            return c.post(f"/v1/orders/{order['id']}/cancel", headers=buyer.headers)

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(cancel, range(20)))
    assert {r.status_code for r in replies} == {200}, [r.text for r in replies if r.status_code != 200]
    assert {(r.json()["status"], r.json()["cancelled_quantity"]) for r in replies} == {("cancelled", 4)}


# --- 13. a chunked body over the limit ---------------------------------------------------------------


def test_a_chunked_body_over_the_limit_is_413(http, user, dump):
    org = user(organiser=True)

    def chunks():
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 1024
        yield b'"}'

    refused_and_nothing_written(
        dump, lambda: http.post("/v1/events", content=chunks(),
                                headers=org.headers | {"content-type": "application/json"}),
        413, "request_too_large")


def test_a_declared_length_that_is_not_a_number_is_refused(api, user):
    import socket
    from urllib.parse import urlparse

    u = urlparse(api)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(b"POST /v1/purchases HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
        status = s.recv(100).split(b" ")[1]
    assert status.startswith(b"4")


# --- 13. `boxoffice serve` stopped with SIGTERM stops the Auth emulator it started --------------------


def test_serve_stopped_with_sigterm_stops_the_auth_emulator_it_started(stack, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    from boxoffice.runtime.emulators import pid_alive

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env |= {"FIRESTORE_EMULATOR_HOST": stack.firestore_host, "GOOGLE_CLOUD_PROJECT": stack.project,
            "BOXOFFICE_STATE_DIR": str(tmp_path)}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "boxoffice.cli", "serve", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.3)
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == proc.pid
                    and b"auth_emulator.js" in _proc(int(p), "cmdline")]
        assert len(children) == 1, "serve should have started its own Auth emulator"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 15
        while pid_alive(children[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not pid_alive(children[0]), "the Auth emulator outlived serve"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()
                    and b"auth_emulator.js" in _proc(int(p), "cmdline")
                    and str(tmp_path).encode() in _proc(int(p), "environ")]:
            os.killpg(pid, signal.SIGKILL)  # only one this test started (its state dir is ours)


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _proc(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""
