"""The storefront and the dashboard in a real headless Chromium, on the real emulators.

The page uses the official Firebase Web SDK (Auth against the Auth emulator, Firestore listeners
under firestore.rules) and buys through the API served by uvicorn. Purchases and cancellations
"from elsewhere" are `boxoffice buy` / `boxoffice cancel` run as separate OS processes, and the
availability summary is written by `boxoffice worker --only inventory-trigger`, another process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from boxoffice.loadtest.browser import boxoffice, ensure_web_built, launch, missing

_why = missing()
if _why:
    pytest.skip(_why, allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

LIVE_S = 30_000  # ms to wait for something that arrives through a listener on a busy machine


@pytest.fixture(scope="module")
def browser(stack, auth_emulator) -> Iterator:
    from boxoffice.runtime.emulators import load_rules

    ensure_web_built()
    load_rules(stack.firestore_host, stack.project)
    with sync_playwright() as p:
        chromium = launch(p)
        yield chromium
        chromium.close()


@pytest.fixture
def worker(db) -> Iterator[Callable[[], None]]:
    """Starts `boxoffice worker --only inventory-trigger` (a separate process) when called."""
    procs: list[subprocess.Popen] = []

    def start() -> None:
        procs.append(subprocess.Popen(boxoffice("worker", "--only", "inventory-trigger"), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    yield start
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(*args: str) -> dict:
    out = subprocess.run(boxoffice(*args, "--json"), capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


def open_store(browser, api: str, *, width: int = 1100, path: str = "/app/") -> Page:
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(api + path)
    page.wait_for_function("window.boxoffice && window.boxoffice.ready === true", timeout=LIVE_S)
    return page


def sign_in(page: Page, email: str, password: str = "secret-password", *, create: bool = False) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Create account" if create else "Sign in", exact=True).click()
    expect(page.locator("#who")).to_contain_text(email, timeout=LIVE_S)


def card(page: Page, event_id: str):
    return page.locator(f"#event-{event_id}")


def test_a_buyer_signs_up_sees_availability_move_buys_once_and_sees_the_ticket(
        browser, api, http, user, event_of, worker):
    organiser = user(organiser=True)
    event = event_of(organiser, capacity=6, per_order_max=4, per_user_limit=4)
    worker()
    page = open_store(browser, api, width=390)  # a phone's width
    ev = card(page, event["id"])
    expect(ev).to_contain_text("6 of 6 left", timeout=LIVE_S)
    expect(ev.get_by_role("button", name="Sign in to buy")).to_be_disabled()

    email = f"web{uuid.uuid4().hex[:8]}@example.com"
    sign_in(page, email, create=True)

    # Another process buys: the page sees it through its listener on the event's summary.
    other = run("buy", event["id"], "--user", "someone-else", "--quantity", "2", "--key", "k1")
    expect(ev).to_contain_text("4 of 6 left", timeout=LIVE_S)

    # Keyboard only: choose 2 tickets, Tab to "Buy", press Enter twice (a double submit).
    page.locator(f"#qty-{event['id']}").select_option("2")
    page.locator(f"#qty-{event['id']}").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == f"buy-{event['id']}"
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    expect(page.locator(f"#msg-{event['id']}")).to_contain_text("Done: 2 tickets", timeout=LIVE_S)

    # My orders and my tickets, read live from Firestore under the rules.
    expect(page.locator("#orders li")).to_have_count(1, timeout=LIVE_S)
    expect(page.locator("#tickets li")).to_have_count(2, timeout=LIVE_S)
    codes = page.locator("#tickets code").all_inner_texts()
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{6,}", c) for c in codes), codes
    expect(ev).to_contain_text("2 of 6 left", timeout=LIVE_S)

    # One order for the double submit, as the API sees it.
    token = page.evaluate("window.boxoffice.idToken()")
    mine = http.get("/v1/orders", headers={"Authorization": f"Bearer {token}"}).json()["orders"]
    assert [o["quantity"] for o in mine] == [2]
    assert mine[0]["status"] == "confirmed"

    # The SDK may read this buyer's order, and the rules refuse another buyer's.
    own = page.evaluate(f"window.boxoffice.readDocument('orders/{mine[0]['id']}')")
    assert own["ok"] and own["data"]["user_id"] == mine[0]["user_id"]
    theirs = page.evaluate(f"window.boxoffice.readDocument('orders/{other['order']['id']}')")
    assert theirs == {"ok": False, "code": "permission-denied"}

    # Usable at a phone's width: nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.context.close()


def test_sold_out_is_said_clearly_and_a_waitlisted_buyer_sees_the_offer_arrive(
        browser, api, user, event_of, worker):
    organiser = user(organiser=True)
    event = event_of(organiser, capacity=2, per_order_max=2, per_user_limit=2)
    buyer = user()
    page = open_store(browser, api)
    sign_in(page, buyer.email)
    ev = card(page, event["id"])
    expect(ev).to_contain_text("2 of 2 left", timeout=LIVE_S)

    # The last tickets go elsewhere while no summary is written: the page still offers them,
    # and the API's refusal is shown in words.
    first = run("buy", event["id"], "--user", "first-buyer", "--quantity", "2", "--key", "k1")
    page.locator(f"#buy-{event['id']}").click()
    expect(page.locator(f"#msg-{event['id']}")).to_contain_text("Sold out", timeout=LIVE_S)

    worker()
    expect(ev.locator(".badge")).to_have_text("Sold out", timeout=LIVE_S)
    expect(ev.get_by_role("button", name="Buy", exact=True)).to_be_disabled()
    ev.get_by_role("button", name="Join the waitlist").click()
    expect(ev.locator(".waitlist-state")).to_contain_text("You are on the waitlist", timeout=LIVE_S)

    # Tickets come back (a cancellation in another process): the offer arrives in the page.
    run("cancel", first["order"]["id"], "--user", "first-buyer")
    expect(ev.locator(".waitlist-state")).to_contain_text("Tickets came back for you", timeout=LIVE_S)
    expect(ev).to_contain_text("2 of 2 left", timeout=LIVE_S)
    page.context.close()


def test_an_organiser_watches_the_sale_on_the_dashboard_and_a_buyer_cannot(
        browser, api, user, event_of, worker):
    organiser = user(organiser=True)
    event = event_of(organiser, capacity=10, per_order_max=4, per_user_limit=4)
    worker()
    page = open_store(browser, api, path=f"/app/dashboard.html?event={event['id']}")
    sign_in(page, organiser.email)
    expect(page.locator("#fig-available")).to_have_text("10 / 10", timeout=LIVE_S)
    for i in range(3):
        run("buy", event["id"], "--user", f"fan-{i}", "--quantity", "2", "--key", "k")
    expect(page.locator("#fig-sold")).to_have_text("6", timeout=LIVE_S)
    expect(page.locator("#fig-available")).to_have_text("4 / 10", timeout=LIVE_S)
    expect(page.locator("#fig-dead")).to_have_text("0", timeout=LIVE_S)
    points = page.evaluate("window.boxoffice.points.map(p => p.sold)")
    assert points[0] == 0 and points[-1] == 6 and points == sorted(points)

    buyer = user()
    other = open_store(browser, api, path="/app/dashboard.html")
    sign_in(other, buyer.email)
    expect(other.locator("#page-message")).to_contain_text("not an organiser", timeout=LIVE_S)
    expect(other.locator("#board")).to_be_hidden()
    status = httpx.get(f"{api}/v1/events/{event['id']}/dashboard", headers=buyer.headers, timeout=30).status_code
    assert status == 403
    page.context.close()
    other.context.close()


def test_a_queued_purchase_shows_its_place_then_the_order_and_its_retry_reuses_the_key(
        browser, api, http, user, event_of, held_queue):
    organiser = user(organiser=True)
    event = event_of(organiser, capacity=1000, per_order_max=4, per_user_limit=4)
    held_queue.backlog(event["id"], 300)  # other buyers' requests, from another process, ahead
    page = open_store(browser, api, width=390)
    sign_in(page, user().email)
    message = page.locator(f"#msg-{event['id']}")

    # The first POST reaches the API and is queued, but its answer is lost on the way back.
    keys: list[str] = []

    def lose_the_first_answer(route) -> None:
        keys.append(route.request.headers.get("idempotency-key", ""))
        if len(keys) == 1:
            route.fetch()
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/v1/purchases", lose_the_first_answer)
    page.locator(f"#qty-{event['id']}").select_option("2")
    page.locator(f"#qty-{event['id']}").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(message).to_contain_text("it will not buy twice", timeout=LIVE_S)

    # "Buy" again (keyboard only) sends the same key: the same queued request, waiting for an
    # allocator, its place kept.
    page.locator(f"#buy-{event['id']}").focus()
    page.keyboard.press("Enter")
    expect(message).to_contain_text("Queued", timeout=LIVE_S)
    expect(message).to_contain_text("you keep your place", timeout=LIVE_S)
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0]

    # A slow allocator (one request a commit) works through the 300 ahead: the page shows how
    # many are ahead, then the order.
    held_queue.start_slow_allocator()
    expect(message).to_contain_text("Done: 2 tickets", timeout=120_000)
    places = page.evaluate("window.boxoffice.purchases.at(-1).places")
    counted = [p for p in places if p["state"] == "queued" and p["ahead"]]
    assert counted, f"the page never showed a place while 300 requests were ahead: {places}"
    assert places[0]["state"] == "waiting_for_allocator" and places[0]["ahead"] is None
    expect(page.locator("#orders li")).to_have_count(1, timeout=LIVE_S)

    token = page.evaluate("window.boxoffice.idToken()")
    mine = http.get("/v1/orders", headers={"Authorization": f"Bearer {token}"}).json()["orders"]
    assert [o["quantity"] for o in mine] == [2]  # two POSTs, one key: one order
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.context.close()
