"""Where a running `boxoffice serve` is, so that other commands can point a person at its pages.

`boxoffice serve` records its base URL and pid in the state directory (``serve.json``) while it
runs; `boxoffice simulate` reads it to print (or open) the dashboard of the sale it runs.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from boxoffice.runtime.emulators import default_state_dir, pid_alive

STATE_FILE_NAME = "serve.json"


def _path(state_dir: Path | None = None) -> Path:
    return (state_dir or default_state_dir()) / STATE_FILE_NAME


def record_url(url: str, state_dir: Path | None = None) -> None:
    path = _path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "pid": os.getpid()}) + "\n")


def forget_url(state_dir: Path | None = None) -> None:
    try:
        data = json.loads(_path(state_dir).read_text())
        if data.get("pid") == os.getpid():
            _path(state_dir).unlink()
    except (OSError, ValueError):
        pass


def recorded_url(state_dir: Path | None = None) -> str | None:
    """The base URL of a live `boxoffice serve`, or None."""
    try:
        data = json.loads(_path(state_dir).read_text())
        url, pid = str(data["url"]), int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not pid_alive(pid):
        return None
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
            return url if resp.status == 200 else None
    except OSError:
        return None


def dashboard_url(base: str, event_id: str) -> str:
    return f"{base}/app/dashboard.html?event={event_id}"


def announce_dashboard(open_browser: bool) -> str | None:
    """A line saying where to watch a sale (and open it when asked), for `boxoffice simulate`;
    None when no `boxoffice serve` runs and none was asked for."""
    from boxoffice.api.web import DEMO_ORGANISER

    base = recorded_url()
    if base is None:
        if not open_browser:
            return None
        return ("nothing to open: run `make serve` (dev stack + API + pages) in another shell first, "
                "then simulate again on that stack; the dashboard follows the newest sale")
    url = f"{base}/app/dashboard.html"
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    return (f"watch it live: {url} (sign in as {DEMO_ORGANISER['email']} / {DEMO_ORGANISER['password']}); "
            f"the storefront: {base}/app/")
