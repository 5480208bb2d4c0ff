"""The local SMTP server of the dev stack and the simulator in several processes on one port:
every mail stored once, the kernel spreads the connections, and stopping the first stops all."""

from __future__ import annotations

import smtplib
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

from boxoffice.runtime.mailbox import SERVER_MARKER, Mailbox, start_process, stop_process


def followers_on(port: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if SERVER_MARKER.encode() in cmd and b"--follower" in cmd and str(port).encode() in cmd:
            out.append(int(proc.name))
    return out


def test_two_server_processes_on_one_port_store_every_mail_once_and_stop_together(tmp_path):
    pid, address = start_process(tmp_path / "mail", tmp_path / "smtp.log", processes=2)
    host, port = address.split(":")
    try:
        def send(i: int) -> None:
            msg = EmailMessage()
            msg["Message-ID"], msg["Subject"], msg["From"], msg["To"] = f"<m{i}@test>", f"ticket {i}", "a@x.test", "b@x.test"
            msg["X-Boxoffice-Order"] = f"o{i}"
            msg.set_content("your tickets")
            with smtplib.SMTP(host, int(port), timeout=10) as client:
                client.send_message(msg)

        deadline = time.monotonic() + 20
        while not followers_on(int(port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(followers_on(int(port))) == 1
        time.sleep(1.0)  # the follower binds after it starts: let it listen before the mails come
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(60)))
        items = Mailbox(tmp_path / "mail").items()
        assert sorted(i.message_id for i in items) == sorted(f"<m{i}@test>" for i in range(60))
        assert {i.order_id for i in items} == {f"o{i}" for i in range(60)}
        assert len({i.server for i in items}) == 2  # both processes received mail
    finally:
        assert stop_process(pid)
    deadline = time.monotonic() + 10
    while followers_on(int(port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert followers_on(int(port)) == []
