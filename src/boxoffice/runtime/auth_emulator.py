"""The Firebase Auth emulator (from firebase-tools, an npm package) for the dev stack and tests.

firebase-tools is installed into the repository's ``node_modules`` by ``npm ci`` (``make
node_modules``); its Auth emulator is plain JavaScript and needs no download. We run it with
``auth_emulator.js`` (no ``firebase emulators:start`` wrapper, so no hub/logging/UI ports), bound
to 127.0.0.1 on a free port, in its own process group, and stop it by its own pid.

Public API::

    AuthEmulator                  host and pid (pid None when reusing one we did not start)
    start_auth_emulator(project)  start one, wait until it answers
    stop_auth_emulator(emu)       stop it if we started it
    running_auth_emulator(...)    context manager: FIREBASE_AUTH_EMULATOR_HOST, else the recorded
                                  dev one, else our own (stopped on exit); sets the env var inside
    recorded_auth_emulator()      the one `boxoffice dev up` started, if alive
    clear_accounts(host, project) delete every user
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from boxoffice.runtime.emulators import (
    EmulatorNotFound,
    EmulatorStartError,
    default_state_dir,
    pid_alive,
    sigterm_unwinds,
)

HOST = "127.0.0.1"
SCRIPT = Path(__file__).with_name("auth_emulator.js")
STATE_FILE_NAME = "auth.json"
MARKER = "auth_emulator.js"
ENV = "FIREBASE_AUTH_EMULATOR_HOST"
INSTALL_HINT = (
    "the Firebase Auth emulator comes from the npm package firebase-tools: run `make node_modules` "
    "(or `npm ci`) at the repository root (needs Node 20+), or set BOXOFFICE_NODE_MODULES to a "
    "node_modules that has firebase-tools, or FIREBASE_AUTH_EMULATOR_HOST to a running emulator"
)


@dataclass(frozen=True)
class AuthEmulator:
    host: str  # "127.0.0.1:PORT"
    pid: int | None  # None: not ours to stop


def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def node_modules(install: bool = True) -> Path:
    """The node_modules holding firebase-tools; runs `npm ci` at the repo root once if missing."""
    explicit = os.environ.get("BOXOFFICE_NODE_MODULES")
    path = Path(explicit) if explicit else repo_root() / "node_modules"
    if (path / "firebase-tools").is_dir():
        return path
    npm = shutil.which("npm")
    if install and not explicit and npm and (repo_root() / "package-lock.json").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=repo_root(), check=False,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        if (path / "firebase-tools").is_dir():
            return path
    raise EmulatorNotFound(f"firebase-tools not found in {path}: {INSTALL_HINT}")


def answers(host: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=timeout) as resp:
            return resp.status == 200 and b"authEmulator" in resp.read()
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_auth_emulator(project: str = "demo-boxoffice", *, state_dir: Path | None = None,
                        timeout: float = 180.0) -> AuthEmulator:
    # 180 s: node loads some thousands of files of firebase-tools first; on a machine whose disk
    # is busy with other work that alone was measured at 25 s, and the start at 99 s.
    node = shutil.which("node")
    if node is None:
        raise EmulatorNotFound(f"node is not on PATH: {INSTALL_HINT}")
    modules = node_modules()
    sd = state_dir or default_state_dir()
    sd.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log_path = sd / "auth-emulator.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [node, str(SCRIPT), HOST, str(port), project], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "NODE_PATH": str(modules)},
        )
    host = f"{HOST}:{port}"
    deadline = time.monotonic() + timeout
    while not answers(host, timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc.pid)
            tail = log_path.read_text(errors="replace")[-2000:]
            raise EmulatorStartError(f"Auth emulator did not answer on http://{host}/. Log {log_path}:\n{tail}")
        time.sleep(0.2)
    return AuthEmulator(host=host, pid=proc.pid)


def _ours(pid: int) -> bool:
    try:
        return MARKER in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _stop(pid: int) -> None:
    if not pid_alive(pid) or not _ours(pid):
        _reap(pid)
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_auth_emulator(emu: AuthEmulator) -> None:
    if emu.pid is not None:
        _stop(emu.pid)


# --------------------------------------------------------------------------- dev stack record


def record(emu: AuthEmulator, state_dir: Path | None = None) -> None:
    sd = state_dir or default_state_dir()
    sd.mkdir(parents=True, exist_ok=True)
    (sd / STATE_FILE_NAME).write_text(json.dumps({"host": emu.host, "pid": emu.pid}) + "\n")


def recorded_auth_emulator(state_dir: Path | None = None) -> AuthEmulator | None:
    try:
        data = json.loads(((state_dir or default_state_dir()) / STATE_FILE_NAME).read_text())
        emu = AuthEmulator(host=str(data["host"]), pid=int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if emu.pid is None or not pid_alive(emu.pid) or not _ours(emu.pid) or not answers(emu.host):
        return None
    return emu


def forget(state_dir: Path | None = None) -> None:
    try:
        ((state_dir or default_state_dir()) / STATE_FILE_NAME).unlink()
    except FileNotFoundError:
        pass


@contextmanager
def running_auth_emulator(project: str = "demo-boxoffice") -> Iterator[AuthEmulator]:
    """An Auth emulator to use (see module docstring); sets FIREBASE_AUTH_EMULATOR_HOST inside."""
    env_host = os.environ.get(ENV)
    rec = None if env_host else recorded_auth_emulator()
    with sigterm_unwinds(enabled=not env_host and rec is None) as unwinding:  # ours to stop, a SIGTERM's too
        if env_host:
            emu = AuthEmulator(host=env_host, pid=None)
        else:
            emu = AuthEmulator(host=rec.host, pid=None) if rec else start_auth_emulator(project)
        saved = os.environ.get(ENV)
        os.environ[ENV] = emu.host
        try:
            yield emu
        finally:
            unwinding()
            if saved is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = saved
            stop_auth_emulator(emu)


def clear_accounts(host: str, project: str) -> None:
    req = urllib.request.Request(f"http://{host}/emulator/v1/projects/{project}/accounts", method="DELETE")
    with urllib.request.urlopen(req, timeout=30):
        pass


def dev_up(project: str) -> AuthEmulator:
    """Start (or find) the dev stack's Auth emulator and record it beside the other emulators."""
    existing = recorded_auth_emulator()
    if existing is not None:
        return existing
    emu = start_auth_emulator(project)
    record(emu)
    return emu


def dev_down() -> int | None:
    """Stop the recorded dev Auth emulator; returns its pid if it was running."""
    try:
        data = json.loads((default_state_dir() / STATE_FILE_NAME).read_text())
        pid = int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    alive = pid_alive(pid) and _ours(pid)
    _stop(pid)
    forget()
    return pid if alive else None
