"""The messaging parts of the local dev stack: the SMTP server `boxoffice dev up` starts beside
the emulators, where its mailbox is, and the Pub/Sub environment of CLI commands.

The SMTP server is recorded in the dev stack's state file (keys ``smtp_host``, ``smtp_pid``,
``mailbox_dir``) and stopped by its pid in `boxoffice dev down`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from boxoffice.messaging.topology import default_topology, ensure_topology
from boxoffice.runtime import emulators as em
from boxoffice.runtime import mailbox


def mailbox_dir(state: dict[str, Any] | None = None) -> Path:
    """BOXOFFICE_MAILBOX, else the dev stack's mailbox, else <state dir>/mail."""
    if os.environ.get("BOXOFFICE_MAILBOX"):
        return Path(os.environ["BOXOFFICE_MAILBOX"])
    state = state if state is not None else (em.read_state() or {})
    if state.get("mailbox_dir"):
        return Path(state["mailbox_dir"])
    return em.default_state_dir() / "mail"


def smtp_address() -> str | None:
    """BOXOFFICE_SMTP_HOST, else the dev stack's SMTP server."""
    return os.environ.get("BOXOFFICE_SMTP_HOST") or (em.read_state() or {}).get("smtp_host")


def start_smtp(state_dir: Path) -> dict[str, Any]:
    """Start the local SMTP server and add it to the state file. Returns what was recorded."""
    mdir = state_dir / "mail"
    pid, host = mailbox.start_process(mdir, state_dir / "smtp.log")
    path = em.state_file(state_dir)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(smtp_host=host, smtp_pid=pid, mailbox_dir=str(mdir))
    path.write_text(json.dumps(data, indent=2) + "\n")
    return {"smtp_host": host, "smtp_pid": pid, "mailbox_dir": str(mdir)}


def stop_smtp(state: dict[str, Any]) -> bool:
    pid = state.get("smtp_pid")
    return mailbox.stop_process(int(pid)) if pid else False


def use_recorded_pubsub() -> str | None:
    """Point the Pub/Sub client at the dev stack's emulator unless PUBSUB_EMULATOR_HOST is set."""
    if not os.environ.get("PUBSUB_EMULATOR_HOST"):
        stack = em.recorded_stack()
        if stack is not None and stack.pubsub_host:
            os.environ["PUBSUB_EMULATOR_HOST"] = stack.pubsub_host
            os.environ.setdefault("GOOGLE_CLOUD_PROJECT", stack.project)
    return os.environ.get("PUBSUB_EMULATOR_HOST")


def ensure_dev_topology(stack: em.Stack) -> list[str]:
    """Create the topology on the stack's Pub/Sub emulator (used by `dev up`)."""

    if not stack.pubsub_host:
        return []
    saved = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = stack.pubsub_host
    try:
        return ensure_topology(default_topology(stack.project, emulator=True))
    finally:
        if saved is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = saved
