"""Headless Chromium for the browser tests and the screenshot/figures scripts.

Debian's ``chromium`` package driven by Playwright for Python (never ``playwright install``: no
browser can be downloaded here). ``BOXOFFICE_CHROMIUM`` names another executable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM = os.environ.get("BOXOFFICE_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
WEB_DIST = REPO / "web" / "public" / "dist"


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return (f"browser tests skipped: no Chromium at {CHROMIUM} "
                "(apt-get install chromium, or set BOXOFFICE_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests skipped: Playwright for Python is not installed (pip install -e '.[test]')"
    return None


def launch(playwright):  # type: ignore[no-untyped-def]
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)


def ensure_web_built() -> None:
    """Build the pages (esbuild) if `make web` has not: the tests need the real bundle."""
    if (WEB_DIST / "store.js").exists():
        return
    if not (REPO / "node_modules" / "esbuild").is_dir():
        subprocess.run([shutil.which("npm") or "npm", "ci", "--no-audit", "--no-fund"], cwd=REPO, check=True,
                       stdin=subprocess.DEVNULL)
    subprocess.run([shutil.which("node") or "node", "web/build.mjs"], cwd=REPO, check=True)


def boxoffice(*args: str) -> list[str]:
    """The `boxoffice` command as a separate OS process (the venv's interpreter)."""
    return [sys.executable, "-m", "boxoffice.cli", *args]
