"""The server side of the pages: their Firebase config, the static files, the dashboard figures."""

from __future__ import annotations

from boxoffice.api.web import client_config


def test_the_config_names_the_emulators_locally_and_the_web_app_in_production():
    local = client_config("demo-x", {"FIRESTORE_EMULATOR_HOST": "127.0.0.1:1", "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:2"})
    assert local["firebase"]["projectId"] == "demo-x"
    assert local["emulators"] == {"firestore": "127.0.0.1:1", "auth": "127.0.0.1:2"}
    assert local["demo_organiser"]["email"]
    prod = client_config("shop", {"BOXOFFICE_FIREBASE_WEB_CONFIG": '{"apiKey": "AIza-x", "appId": "1:2:web:3"}'})
    assert prod["emulators"] is None and "demo_organiser" not in prod
    assert prod["firebase"] == {"projectId": "shop", "apiKey": "AIza-x", "authDomain": "shop.firebaseapp.com",
                                "appId": "1:2:web:3"}


def test_the_pages_and_their_config_are_served(http, stack, auth_emulator):
    config = http.get("/v1/client-config").json()
    assert config["emulators"] == {"firestore": stack.firestore_host, "auth": auth_emulator.host}
    assert http.get("/", follow_redirects=False).headers["location"] == "/app/"
    for page, script in (("/app/", "dist/store.js"), ("/app/dashboard.html", "dist/dashboard.js")):
        r = http.get(page)
        assert r.status_code == 200 and script in r.text


def test_the_dashboard_counts_emails_and_dead_letters_of_its_event_for_its_organiser(http, db, user, event_of):
    owner, stranger, buyer = user(organiser=True), user(organiser=True), user()
    event = event_of(owner)
    for i, status in enumerate(["sent", "sent", "skipped", "sending"]):
        db.document(f"emails/m{i}").set({"event_id": event["id"], "status": status})
    db.document("emails/elsewhere").set({"event_id": "another", "status": "sent"})
    db.document("message_failures/email--m9").set({"event_id": event["id"], "dead_lettered": True})
    db.document("message_failures/email--m8").set({"event_id": event["id"], "failures": 2})
    db.document("trigger_failures/c1").set({"event_id": event["id"], "resolved": False})
    db.document("trigger_failures/c2").set({"event_id": event["id"], "resolved": True})

    r = http.get(f"/v1/events/{event['id']}/dashboard", headers=owner.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["emails"] == {"sent": 2, "skipped": 1, "failed": 0, "pending": 1}
    assert body["dead_letters"] == {"messages": 1, "inventory_changes": 1}
    # nothing answered yet: no queue figures, or (the allocator took the event's lease) zero answers
    assert (body["queue"] is None and body["queue_note"]) or body["queue"]["answered"] == 0
    from boxoffice.services.purchasing import purchase_tickets

    purchase_tickets(db, event["id"], buyer.uid, 1, "dash-1")
    queue = http.get(f"/v1/events/{event['id']}/dashboard", headers=owner.headers).json()["queue"]
    assert queue["answered"] == 1 and queue["answer_p50_ms"] is not None and queue["answer_p50_ms"] >= 0
    # the allocator (another process) holds the queue; one answer tells no arrival rate, and once
    # it finds the queue empty the length is 0
    assert queue["allocator"] is True and queue["length"] in (0, None) and queue["answers_per_s"] > 0
    assert http.get(f"/v1/events/{event['id']}/dashboard", headers=stranger.headers).json()["code"] == "not_event_organiser"
    assert http.get(f"/v1/events/{event['id']}/dashboard", headers=buyer.headers).status_code == 403
    assert http.get("/v1/events/nope/dashboard", headers=owner.headers).status_code == 404


def test_the_dashboard_reports_queue_answers_and_their_latency_from_the_answer_documents(http, db, user, event_of):
    from datetime import UTC, datetime, timedelta

    owner = user(organiser=True)
    event = event_of(owner)
    now = datetime.now(UTC)
    for i, wait_ms in enumerate([100, 200, 300, 4000]):
        arrived = now - timedelta(seconds=5)
        db.document(f"requests/r{i}").set({"event_id": event["id"], "arrived_at": arrived,
                                           "answered_at": arrived + timedelta(milliseconds=wait_ms)})
    db.document("requests/old").set({"event_id": event["id"], "arrived_at": now - timedelta(minutes=5),
                                     "answered_at": now - timedelta(minutes=4)})
    queue = http.get(f"/v1/events/{event['id']}/dashboard", headers=owner.headers).json()["queue"]
    assert queue["answered"] == 4 and queue["window_s"] == 30
    assert queue["answer_p50_ms"] in (200.0, 300.0) and queue["answer_p99_ms"] == 4000.0
