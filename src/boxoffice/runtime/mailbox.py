"""The local SMTP server of the dev stack and the mailbox it writes to disk.

Every message received is stored as ``<dir>/<n>-<uuid>.eml`` and indexed as one JSON line in
``<dir>/index.jsonl`` (received_at, Message-ID, from, to, subject and the X-Boxoffice-*
headers). Nothing is deduplicated here: a resent email appears twice, and readers (``boxoffice
mail list``, the pipeline audit) count distinct Message-IDs.

Run it as ``python -m boxoffice.runtime.mailbox --port N --dir DIR`` (what `boxoffice dev up`
does), or in-process with ``LocalSmtpServer`` (tests).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

INDEX = "index.jsonl"
SERVER_MARKER = "boxoffice.runtime.mailbox"


@dataclass(frozen=True)
class MailItem:
    received_at: str
    message_id: str
    mail_from: str
    to: list[str]
    subject: str
    kind: str
    order_id: str
    event_id: str
    source_message: str  # the pipeline's message id (outbox id)
    file: str
    server: str = ""  # the server process that received it (pid)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MailItem:
        return cls(**{k: d.get(k, "" if k != "to" else []) for k in cls.__dataclass_fields__})


def _text(value: Any) -> str:
    """A header's text: RFC 2047 encoded words decoded (``=?utf-8?q?...?=``), else as it is."""
    text = str(value or "")
    return str(make_header(decode_header(text))) if "=?" in text else text


class Mailbox:
    """A mailbox directory written by the local SMTP server."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def store(self, raw: bytes, mail_from: str, rcpt_tos: list[str]) -> MailItem:
        # The headers are all it reads, with the legacy policy (28 against 160 us a mail with the
        # modern one, which parses every header); an RFC 2047-encoded value is decoded by _text.
        msg = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        (self.path / name).write_bytes(raw)
        item = MailItem(
            received_at=datetime.now(UTC).isoformat(),
            message_id=_text(msg.get("Message-ID", "")).strip(),
            mail_from=mail_from,
            to=list(rcpt_tos),
            subject=_text(msg.get("Subject", "")),
            kind=_text(msg.get("X-Boxoffice-Kind", "")),
            order_id=_text(msg.get("X-Boxoffice-Order", "")),
            event_id=_text(msg.get("X-Boxoffice-Event", "")),
            source_message=_text(msg.get("X-Boxoffice-Message", "")),
            file=name,
            server=str(os.getpid()),
        )
        line = json.dumps(item.__dict__) + "\n"
        with self._lock, open(self.path / INDEX, "a", encoding="utf-8") as f:
            # One write of one line, appended (O_APPEND): concurrent readers see whole lines, and
            # the server's processes sharing one mailbox never interleave their lines.
            f.write(line)
        return item

    def items(self) -> list[MailItem]:
        try:
            text = (self.path / INDEX).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            if line.strip():
                try:
                    out.append(MailItem.from_json(json.loads(line)))
                except ValueError:
                    continue  # a line being written right now
        return out

    def distinct(self) -> list[MailItem]:
        """One item per Message-ID (the first received)."""
        seen: dict[str, MailItem] = {}
        for item in self.items():
            seen.setdefault(item.message_id or item.file, item)
        return list(seen.values())

    def duplicates(self) -> dict[str, int]:
        counts = Counter(i.message_id for i in self.items())
        return {k: v for k, v in counts.items() if v > 1}

    def clear(self) -> None:
        for p in self.path.glob("*.eml"):
            p.unlink(missing_ok=True)
        (self.path / INDEX).unlink(missing_ok=True)


class _Handler:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mailbox.store(envelope.original_content or envelope.content, envelope.mail_from,
                           list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _controller(handler: _Handler, host: str, port: int, reuse_port: bool) -> Any:
    """aiosmtpd's threaded controller; with ``reuse_port`` its socket sets SO_REUSEPORT, so that
    several server processes listen on one port and the kernel spreads connections over them."""
    from aiosmtpd.controller import Controller

    class SharedPortController(Controller):
        def _create_server(self) -> Any:
            return self.loop.create_server(self._factory_invoker, host=self.hostname, port=self.port,
                                           ssl=self.ssl_context, reuse_port=True)

    return (SharedPortController if reuse_port else Controller)(handler, hostname=host, port=port)


class LocalSmtpServer:
    """An in-process SMTP server storing into a Mailbox (aiosmtpd's threaded Controller)."""

    def __init__(self, mailbox_dir: Path | str, host: str = "127.0.0.1", port: int = 0, *,
                 reuse_port: bool = False) -> None:
        self.mailbox = Mailbox(mailbox_dir)
        self.host = host
        self.port = port or free_port(host)
        self.reuse_port = reuse_port
        self._controller = _controller(_Handler(self.mailbox), host, self.port, reuse_port)
        self._running = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> LocalSmtpServer:
        """Start serving (again, on the same port, after ``stop``: tests take SMTP away and back)."""
        if self._controller.loop.is_closed():  # a stopped controller cannot start again
            self._controller = _controller(_Handler(self.mailbox), self.host, self.port, self.reuse_port)
        self._controller.start()
        self._running = True
        return self

    def stop(self) -> None:
        if self._running:
            self._controller.stop()
            self._running = False


# --------------------------------------------------------------------------- dev stack process


DEFAULT_PROCESSES = 2  # commit -> email p99 4.83 s against 5.25 s with one, on 2 cores (figures.md)


def start_process(mailbox_dir: Path, log_path: Path, host: str = "127.0.0.1",
                  processes: int | None = None) -> tuple[int, str]:
    """Start the SMTP server as a detached process (which starts ``processes - 1`` more on the
    same port, ``BOXOFFICE_SMTP_PROCESSES``, default 2); wait until it accepts connections.
    Returns (pid, "host:port"); stopping that pid stops them all."""
    port = free_port(host)
    count = processes or int(os.environ.get("BOXOFFICE_SMTP_PROCESSES", DEFAULT_PROCESSES))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", SERVER_MARKER, "--host", host, "--port", str(port), "--dir", str(mailbox_dir),
             "--processes", str(count)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"SMTP server exited with code {proc.returncode}; see {log_path}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return proc.pid, f"{host}:{port}"
        except OSError:
            time.sleep(0.1)
    stop_process(proc.pid)
    raise RuntimeError(f"SMTP server did not listen on {host}:{port} within 20 s; see {log_path}")


def _is_ours(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return SERVER_MARKER in cmd


def stop_process(pid: int, grace: float = 5.0) -> bool:
    """Stop the SMTP server process ``pid`` if it is ours (guards against a recycled pid)."""
    if not _is_ours(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _is_ours(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="boxoffice local SMTP server (stores mail on disk)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--processes", type=int, default=1,
                        help="server processes on the one port (SO_REUSEPORT); this one starts the others")
    parser.add_argument("--follower", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shared = args.processes > 1 or args.follower
    if args.follower:
        _die_with_parent()
    server = LocalSmtpServer(args.dir, args.host, args.port, reuse_port=shared).start()
    followers = [subprocess.Popen([sys.executable, "-m", SERVER_MARKER, "--host", args.host, "--port", str(args.port),
                                   "--dir", args.dir, "--follower"], stdin=subprocess.DEVNULL)
                 for _ in range(args.processes - 1)] if not args.follower else []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"smtp listening on {server.address} ({1 + len(followers)} process(es)), mailbox {args.dir}", flush=True)
    stop.wait()
    for follower in followers:
        follower.terminate()
    server.stop()
    for follower in followers:
        try:
            follower.wait(5)
        except subprocess.TimeoutExpired:
            follower.kill()


def _die_with_parent() -> None:
    """A follower ends when the process that started it ends, even by SIGKILL (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    main()
