"""The pages in a real headless Chromium: screenshots for the docs, and what a browser sees in a sale.

    python -m boxoffice.loadtest.browser screenshots [--out docs/screens]
    python -m boxoffice.loadtest.browser figures [--buyers 5000 --tickets 1000 --clickers-buyers 1000]

Both bring up a local site: the emulators (the `boxoffice dev up` stack, else their own),
firestore.rules loaded, the Auth emulator, the API in its own uvicorn process, an allocator
process, and the inventory trigger as `boxoffice worker --only inventory-trigger` in another;
everything they start they stop.
Chromium is Debian's package (``/usr/bin/chromium`` or ``BOXOFFICE_CHROMIUM``) driven by
Playwright for Python; no browser is ever downloaded.

``figures`` measures, with the machine shared as it is (report the load average with them):
- summary staleness seen by the page during a sale of ``--buyers`` buyers run by
  `boxoffice simulate` in another process: for every order, from its commit (the order's
  ``committed_at``, the same atomic commit as its shard) to the arrival in the page of the first
  event snapshot whose summary ``as_of`` covers it; p50 / p99;
- time from a click on "Buy" to the order shown in "My orders" (the page's own Firestore listener),
  p50 / p99, clicked one after another while `simulate --buyers N` runs on another event.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = os.environ.get("BOXOFFICE_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
REPO = Path(__file__).resolve().parents[3]
WEB_DIST = REPO / "web" / "public" / "dist"
PASSWORD = "secret-password"


def missing() -> str | None:
    """Why a browser cannot be driven here, or None."""
    if not Path(CHROMIUM).exists():
        return (f"browser tests skipped: no Chromium at {CHROMIUM} "
                "(apt-get install chromium, or set BOXOFFICE_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests skipped: Playwright for Python is not installed (pip install -e '.[test]')"
    return None


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)


def ensure_web_built() -> None:
    """Build the pages (esbuild) if `make web` has not."""
    if (WEB_DIST / "store.js").exists():
        return
    if not (REPO / "node_modules" / "esbuild").is_dir():
        subprocess.run([shutil.which("npm") or "npm", "ci", "--no-audit", "--no-fund"], cwd=REPO, check=True,
                       stdin=subprocess.DEVNULL)
    subprocess.run([shutil.which("node") or "node", "web/build.mjs"], cwd=REPO, check=True)


def boxoffice(*args: str) -> list[str]:
    """The `boxoffice` command as a separate OS process (this interpreter)."""
    return [sys.executable, "-m", "boxoffice.cli", *args]


@contextmanager
def inventory_worker() -> Iterator[subprocess.Popen[bytes]]:
    """`boxoffice worker --only inventory-trigger` in its own process group, stopped on exit."""
    proc = subprocess.Popen(boxoffice("worker", "--only", "inventory-trigger"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass(frozen=True)
class Site:
    url: str
    project: str
    firestore_host: str
    auth_host: str
    pubsub_host: str
    allocators: Any  # runtime.allocator.AllocatorProcesses: stop() and ensure_running()


@contextmanager
def local_site(project: str = "demo-boxoffice") -> Iterator[Site]:
    """Emulators + rules + Auth + the API process + an allocator process + the inventory worker
    (see the module docstring)."""
    from boxoffice.api.web import DEMO_ORGANISER
    from boxoffice.loadtest.via_api import running_api_server
    from boxoffice.runtime.allocator import AllocatorProcesses
    from boxoffice.runtime.auth_emulator import running_auth_emulator
    from boxoffice.runtime.emulator_users import ensure_organiser
    from boxoffice.runtime.emulators import load_rules, running_stack

    ensure_web_built()
    with running_stack(project) as stack, running_auth_emulator(project) as auth:
        load_rules(stack.firestore_host, project)
        ensure_organiser(auth.host, project, DEMO_ORGANISER["email"], DEMO_ORGANISER["password"])
        pubsub = stack.pubsub_host
        if pubsub is None:
            raise RuntimeError("the pages need the Pub/Sub emulator (purchases go through the admission queue)")
        with running_api_server(stack.firestore_host, auth.host, project) as url, inventory_worker(), \
                AllocatorProcesses(stack.firestore_host, pubsub, project) as allocators:
            yield Site(url=url, project=project, firestore_host=stack.firestore_host, auth_host=auth.host,
                       pubsub_host=pubsub, allocators=allocators)


def queue_backlog(project: str, event_id: str, count: int) -> None:
    """Publish ``count`` one-ticket requests of buyers fan-0.. to the event's admission queue (this
    process is one more app instance): what is ahead of the next buyer while no allocator answers."""
    from boxoffice.domain.allocation import RequestKind, TicketRequest
    from boxoffice.domain.model import order_id_for
    from boxoffice.store.admission_queue import admission_queue

    queue = admission_queue(project)
    for i in range(count):
        user = f"fan-{i}"
        queue.publish(TicketRequest(id=order_id_for(user, "backlog"), kind=RequestKind.PURCHASE, event_id=event_id,
                                    user_id=user, quantity=1, idempotency_key="backlog", instance="backlog"))


SLOW_ALLOCATOR = {"BOXOFFICE_ALLOCATOR_BATCH": "1"}  # one request a commit: a backlog takes a while


# ------------------------------------------------------------------------------ page actions


def open_page(browser: Any, site: Site, path: str = "/app/", *, width: int = 1100, height: int = 900) -> Any:
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(site.url + path)
    page.wait_for_function("window.boxoffice && window.boxoffice.ready === true", timeout=60_000)
    return page


def sign_in(page: Any, email: str, password: str = PASSWORD, *, create: bool = False) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Create account" if create else "Sign in", exact=True).click()
    page.locator("#who").filter(has_text=email).wait_for(timeout=60_000)


def organiser_token(site: Site) -> str:
    from boxoffice.api.web import DEMO_ORGANISER
    from boxoffice.runtime.emulator_users import sign_in as rest_sign_in

    return rest_sign_in(site.auth_host, DEMO_ORGANISER["email"], DEMO_ORGANISER["password"])


def create_event(site: Site, token: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "Night at the Opera", "venue": "Hall 1", "starts_at": "2030-05-01T20:00:00+02:00",
            "price": 2500, "currency": "EUR", "capacity": 100, "per_order_max": 4} | fields
    r = httpx.post(f"{site.url}/v1/events", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    r.raise_for_status()
    return dict(r.json())


def run_cli(*args: str) -> dict[str, Any]:
    out = subprocess.run(boxoffice(*args, "--json"), capture_output=True, text=True, timeout=600,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"boxoffice {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout))


# ------------------------------------------------------------------------------ screenshots


def screenshots(out: Path) -> list[Path]:
    """The storefront (signed in, after some sales, one event sold out; and at a phone's width
    with a purchase waiting in the queue, its place shown) and the dashboard during a small
    simulated sale, as PNGs in ``out``."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with local_site() as site, sync_playwright() as p:
        browser = launch(p)
        token = organiser_token(site)
        gig = create_event(site, token, name="New Year Gig", venue="Hall 1", capacity=300,
                           starts_at="2026-12-31T21:00:00+01:00", price=4500)
        opera = create_event(site, token, name="Night at the Opera", venue="Grand Theatre", capacity=4,
                             starts_at="2027-02-14T19:30:00+01:00")
        create_event(site, token, name="Jazz Brunch", venue="Riverside", capacity=80,
                     starts_at="2027-03-07T11:00:00+01:00", price=1800)
        for i in range(12):
            run_cli("buy", gig["id"], "--user", f"fan-{i}", "--quantity", str(1 + i % 4), "--key", "k")
        run_cli("buy", opera["id"], "--user", "fan-x", "--quantity", "4", "--key", "k")
        page = open_page(browser, site)
        page.on("console", lambda m: print("page:", m.text, file=sys.stderr))
        sign_in(page, f"ann-{uuid.uuid4().hex[:6]}@example.com", create=True)
        page.locator(f"#event-{gig['id']} .left").filter(has_text="270 of 300 left").wait_for(timeout=60_000)
        page.locator(f"#qty-{gig['id']}").select_option("2")
        page.locator(f"#buy-{gig['id']}").click()
        page.locator("#tickets li").nth(1).wait_for(timeout=60_000)
        page.locator(f"#event-{opera['id']} .badge").filter(has_text="Sold out").wait_for(timeout=60_000)
        page.locator(f"#wait-{opera['id']}").click()
        try:
            # the API's answer, in the card's message (the waitlist listener's own line may come later)
            page.locator(f"#msg-{opera['id']}").filter(has_text="waitlist").wait_for(timeout=60_000)
        except Exception:
            _shot(page, out / "failed.png")
            raise
        written.append(_shot(page, out / "storefront.png"))
        written.append(_queued_on_a_phone(browser, site, token, out / "storefront-phone.png"))

        board = open_page(browser, site, "/app/dashboard.html", width=1100, height=900)
        from boxoffice.api.web import DEMO_ORGANISER

        sign_in(board, DEMO_ORGANISER["email"], DEMO_ORGANISER["password"])
        sale = subprocess.Popen(boxoffice("simulate", "--buyers", "1500", "--tickets", "400", "--concurrency", "50"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            board.wait_for_function("window.boxoffice.points.length > 3 && window.boxoffice.points.at(-1).sold > 0",
                                    timeout=180_000)
            deadline = time.monotonic() + 120
            while sale.poll() is None and time.monotonic() < deadline:  # most of the sale on the chart
                if board.evaluate("window.boxoffice.points.at(-1).sold") >= 300:
                    break
                time.sleep(1)
            time.sleep(2)
            written.append(_shot(board, out / "dashboard.png"))
        finally:
            sale.wait(timeout=600)
        browser.close()
    return written


def _queued_on_a_phone(browser: Any, site: Site, token: str, path: Path) -> Path:
    """The storefront at a phone's width, a purchase waiting behind 200 others with its place shown:
    the site's allocator is stopped while the others and then the page's purchase are queued, and
    a slow one (one request a commit) works through them."""
    from boxoffice.runtime.allocator import AllocatorProcesses

    fest = create_event(site, token, name="Summer Festival", venue="Park Stage", capacity=2000,
                        starts_at="2026-12-12T18:00:00+01:00", price=6000)
    site.allocators.stop()
    slow = None
    try:
        queue_backlog(site.project, fest["id"], 200)
        phone = open_page(browser, site, width=390, height=844)
        sign_in(phone, f"bo-{uuid.uuid4().hex[:6]}@example.com", create=True)
        phone.locator(f"#qty-{fest['id']}").select_option("2")
        phone.locator(f"#buy-{fest['id']}").click()
        message = phone.locator(f"#msg-{fest['id']}")
        message.filter(has_text="keep your place").wait_for(timeout=60_000)  # the API's 202, nothing moving
        slow = AllocatorProcesses(site.firestore_host, site.pubsub_host, site.project, settings=SLOW_ALLOCATOR).start()
        message.filter(has_text="ahead of you").wait_for(timeout=120_000)
        time.sleep(4)  # a few more answers: the pace is measured from the first ones
        shot = _shot(phone, path)
        message.filter(has_text="Done").wait_for(timeout=600_000)
        return shot
    finally:
        if slow is not None:
            slow.stop()
        site.allocators.ensure_running()


def _shot(page: Any, path: Path) -> Path:
    page.screenshot(path=str(path), full_page=True)
    return path


# ------------------------------------------------------------------------------ figures


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_staleness(snapshots: list[dict[str, Any]], commits_ms: list[float]) -> list[float]:
    """For every commit, ms from it to the arrival of the first snapshot whose ``as_of`` covers it.

    Commits no snapshot covered are left out (the caller reports how many)."""
    covering = sorted((s["as_of"], s["arrived"]) for s in snapshots if s.get("as_of") is not None)
    out: list[float] = []
    for c in commits_ms:
        arrivals = [arrived for as_of, arrived in covering if as_of >= c]
        if arrivals:
            out.append(min(arrivals) - c)
    return out


def _ms(ts: datetime) -> float:
    return ts.timestamp() * 1000.0


def _db(site: Site) -> Any:
    from boxoffice.runtime.emulators import Stack, firestore_client

    return firestore_client(Stack(site.project, site.firestore_host, None, (), Path(".")))


def _event_ids(site: Site) -> set[str]:
    return {s.id for s in _db(site).collection("events").select([]).stream()}


def _commit_times(site: Site, event_id: str) -> list[float]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = _db(site).collection("orders").where(filter=FieldFilter("event_id", "==", event_id))
    rows = query.select(["committed_at"]).stream()
    return [_ms(r.get("committed_at")) for r in rows if r.get("committed_at") is not None]


def figures(buyers: int, tickets: int, click_buyers: int, clicks: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    result: dict[str, Any] = {"load_before": os.getloadavg()}
    with local_site() as site, sync_playwright() as p:
        browser = launch(p)
        page = open_page(browser, site)

        # 1. staleness during a sale of `buyers` buyers in another process
        before = _event_ids(site)
        started = time.monotonic()
        sale = subprocess.run(boxoffice("simulate", "--buyers", str(buyers), "--tickets", str(tickets), "--json",
                                        str(_report_path("browser-sale.json"))),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800)
        # Exit 7 (buyers with errors, e.g. timeouts on a starved machine) still sold what it sold:
        # the staleness of those commits is what the page saw. Anything else is a failure.
        if sale.returncode not in (0, 7):
            raise RuntimeError(f"simulate failed: {sale.stderr[-2000:]}")
        sale_report = json.loads(_report_path("browser-sale.json").read_text())
        event_id = next(iter(_event_ids(site) - before), None)
        time.sleep(5)  # the last summary write and its snapshot
        snaps = [s for s in page.evaluate("window.boxoffice.snapshots") if s["event_id"] == event_id]
        commits = _commit_times(site, event_id) if event_id else []
        stale = summary_staleness(snaps, commits)
        result["staleness"] = {
            "buyers": buyers, "tickets": tickets, "event_id": event_id, "sale_s": round(time.monotonic() - started, 1),
            "simulate_exit": sale.returncode, "sold": sale_report.get("tickets_sold"), "errors": sale_report.get("errors"),
            "orders": len(commits), "covered": len(stale), "snapshots": len(snaps),
            "p50_ms": _round(_pct(stale, 0.5)), "p99_ms": _round(_pct(stale, 0.99)), "max_ms": _round(max(stale, default=None)),
        }
        result["load_after_sale"] = os.getloadavg()

        # 2. click "Buy" -> order shown, while `click_buyers` buyers run in another process
        token = organiser_token(site)
        own = create_event(site, token, name="Clicks", capacity=max(clicks * 2, 10), per_order_max=1,
                           per_user_limit=max(clicks * 2, 10))
        sign_in(page, f"clicker-{uuid.uuid4().hex[:6]}@example.com", create=True)
        page.locator(f"#buy-{own['id']}").filter(has_text="Buy").wait_for(timeout=60_000)
        background = subprocess.Popen(boxoffice("simulate", "--buyers", str(click_buyers), "--tickets",
                                                str(max(click_buyers // 5, 1)), "--concurrency", "100"),
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
        done_clicks = 0
        try:
            time.sleep(3)  # the simulator's set-up (event, users) before its buyers start
            while done_clicks < clicks and background.poll() is None:
                page.locator(f"#buy-{own['id']}").click()
                page.wait_for_function(
                    "n => window.boxoffice.purchases.length >= n && window.boxoffice.purchases[n - 1].answered !== null "
                    "&& (window.boxoffice.purchases[n - 1].shown !== null || window.boxoffice.purchases[n - 1].outcome !== 'sold')",
                    arg=done_clicks + 1, timeout=120_000)
                done_clicks += 1
        finally:
            overlapped = background.poll() is None
            background.wait(timeout=1800)
        records = page.evaluate("window.boxoffice.purchases")
        shown = [r["shown"] - r["clicked"] for r in records if r.get("shown") is not None]
        answered = [r["answered"] - r["clicked"] for r in records if r.get("answered") is not None]
        result["click_to_order"] = {
            "background_buyers": click_buyers, "clicks": len(records), "orders_shown": len(shown),
            "all_during_sale": overlapped or done_clicks == clicks,
            "outcomes": sorted({r.get("outcome") for r in records}),
            "shown_p50_ms": _round(_pct(shown, 0.5)), "shown_p99_ms": _round(_pct(shown, 0.99)),
            "answered_p50_ms": _round(_pct(answered, 0.5)), "answered_p99_ms": _round(_pct(answered, 0.99)),
        }
        result["load_after"] = os.getloadavg()
        browser.close()
    return result


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _report_path(name: str) -> Path:
    path = Path("reports") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m boxoffice.loadtest.browser", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    shots = sub.add_parser("screenshots", help="PNGs of the storefront and the dashboard")
    shots.add_argument("--out", type=Path, default=REPO / "docs" / "screens")
    figs = sub.add_parser("figures", help="summary staleness in the page; click-to-order latency")
    figs.add_argument("--buyers", type=int, default=5000)
    figs.add_argument("--tickets", type=int, default=1000)
    figs.add_argument("--click-buyers", type=int, default=1000)
    figs.add_argument("--clicks", type=int, default=20)
    figs.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    why = missing()
    if why:
        print(why, file=sys.stderr)
        return 6
    if args.command == "screenshots":
        for path in screenshots(args.out):
            print(path)
        return 0
    result = figures(args.buyers, args.tickets, args.click_buyers, args.clicks)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
