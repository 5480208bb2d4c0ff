"""The local dev stack: Google's own Firestore and Pub/Sub emulators.

Both emulators ship with the Google Cloud CLI as Java programs under
``<sdk_root>/platform``. We start the jars directly (never through
``gcloud beta emulators``, whose child JVM outlives the wrapper), bound to
127.0.0.1 on free ports, each in its own process group with its output in a
log file, wait until each answers ``GET /`` with 200 "Ok", and stop them by
their own process ids.

Public API::

    Stack                      what is running (hosts, pids we started, state dir)
    start_stack(...)           start emulators, return a Stack
    stop_stack(stack)          stop the processes the Stack says we started
    running_stack(...)         context manager: reuse from env / `boxoffice dev up`, else start+stop
                               (a SIGTERM unwinds it too: ``sigterm_unwinds``)
    clear_firestore(s, proj)   delete every document in the emulator for a project
    load_rules(host, proj)     make the emulator enforce firestore.rules for web clients
    firestore_client(stack)    google.cloud.firestore.Client bound to the emulator

Environment knobs:
    FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST   reuse emulators someone else runs
    BOXOFFICE_STATE_DIR       where `dev up` records the stack (default ./.boxoffice)
    BOXOFFICE_GCLOUD_SDK_ROOT Google Cloud CLI root (default: `gcloud info`, then /usr/lib/google-cloud-sdk)
    JAVA                      java executable (default: java on PATH, then $JAVA_HOME/bin/java)
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud import firestore

__all__ = [
    "EmulatorNotFound",
    "EmulatorStartError",
    "Stack",
    "clear_firestore",
    "default_state_dir",
    "firestore_client",
    "host_answers",
    "load_rules",
    "pid_alive",
    "read_state",
    "recorded_stack",
    "remove_state",
    "restart_pubsub_emulator",
    "running_stack",
    "sigterm_unwinds",
    "start_pubsub_emulator",
    "start_stack",
    "state_file",
    "stop_emulator",
    "stop_stack",
    "write_state",
]

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_GRACE = 10.0
DEFAULT_SDK_ROOT = Path("/usr/lib/google-cloud-sdk")
FIRESTORE_JAR = Path("platform/cloud-firestore-emulator/cloud-firestore-emulator.jar")
FIRESTORE_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
PUBSUB_JAR_GLOB = "platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar"
STATE_FILE_NAME = "stack.json"
# Substrings of a command line that mark a process as one of our emulators;
# checked before signalling a recorded pid, so a recycled pid is never hit.
_EMULATOR_MARKERS = ("cloud-firestore-emulator", "cloud-pubsub-emulator")

INSTALL_HINT = (
    "install the Google Cloud CLI components cloud-firestore-emulator and pubsub-emulator "
    "(`gcloud components install cloud-firestore-emulator pubsub-emulator`, or "
    "`apt-get install google-cloud-cli-firestore-emulator google-cloud-cli-pubsub-emulator`) "
    "and a Java 11+ runtime (e.g. `apt-get install openjdk-17-jre-headless`); "
    "or point BOXOFFICE_GCLOUD_SDK_ROOT / JAVA at existing installs, or set "
    "FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST to emulators you already run"
)


class EmulatorNotFound(RuntimeError):
    """gcloud, an emulator component or java is missing."""


class EmulatorStartError(RuntimeError):
    """An emulator was found but did not come up (message includes its log tail)."""


@dataclass(frozen=True)
class Stack:
    project: str
    firestore_host: str  # "127.0.0.1:PORT"
    pubsub_host: str | None
    pids: tuple[int, ...]  # processes WE started (empty when reusing)
    state_dir: Path


# --------------------------------------------------------------------------- locating


def _run_quiet(cmd: list[str], timeout: float = 20.0) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=8)
def _gcloud_sdk_root(path_env: str) -> Path | None:
    gcloud = shutil.which("gcloud", path=path_env)
    if not gcloud:
        return None
    r = _run_quiet([gcloud, "info", "--format=value(installation.sdk_root)"])
    if r is None or r.returncode != 0 or not r.stdout.strip():
        return None
    return Path(r.stdout.strip())


def _sdk_root() -> tuple[Path | None, str]:
    """(root, how it was found). An explicit BOXOFFICE_GCLOUD_SDK_ROOT never falls back."""
    explicit = os.environ.get("BOXOFFICE_GCLOUD_SDK_ROOT")
    if explicit:
        return Path(explicit), "BOXOFFICE_GCLOUD_SDK_ROOT"
    root = _gcloud_sdk_root(os.environ.get("PATH", os.defpath))
    if root is not None:
        return root, "gcloud info"
    if DEFAULT_SDK_ROOT.is_dir():
        return DEFAULT_SDK_ROOT, "default location"
    return None, "no gcloud on PATH"


@functools.lru_cache(maxsize=8)
def _java_major(java: str) -> int | None:
    r = _run_quiet([java, "-version"])
    if r is None:
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', r.stderr + r.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" -> 8


def _java() -> tuple[str | None, str]:
    explicit = os.environ.get("JAVA")
    if explicit:
        found = shutil.which(explicit)
        return found, f"JAVA={explicit}"
    found = shutil.which("java")
    if found:
        return found, "PATH"
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home, "bin", "java"), os.X_OK):
        return str(Path(home, "bin", "java")), "JAVA_HOME"
    return None, "no java on PATH"


@dataclass(frozen=True)
class _Tools:
    java: str
    firestore_jar: Path
    pubsub_jar: Path | None


def _locate(*, firestore: bool = True, pubsub: bool = True) -> _Tools:
    problems: list[str] = []
    root, how = _sdk_root()
    fs_jar: Path | None = None
    ps_jar: Path | None = None
    if root is None:
        problems.append(f"Google Cloud CLI not found ({how}, and {DEFAULT_SDK_ROOT} does not exist)")
    elif not root.is_dir():
        problems.append(f"Google Cloud CLI root {root} (from {how}) does not exist")
    else:
        if firestore:
            fs_jar = root / FIRESTORE_JAR
            if not fs_jar.is_file():
                problems.append(f"Firestore emulator not installed (no {fs_jar})")
                fs_jar = None
        if pubsub:
            jars = sorted(root.glob(PUBSUB_JAR_GLOB))
            if jars:
                ps_jar = jars[-1]
            else:
                problems.append(f"Pub/Sub emulator not installed (no {root / PUBSUB_JAR_GLOB})")
    java, jhow = _java()
    if java is None:
        problems.append(f"Java runtime not found ({jhow})")
    else:
        major = _java_major(java)
        if major is None:
            problems.append(f"{java} does not run or report a version")
        elif major < 11:
            problems.append(f"{java} is Java {major}; the emulators need Java 11+")
    if problems:
        raise EmulatorNotFound("Cannot start the local emulators: " + "; ".join(problems) + ". To fix: " + INSTALL_HINT + ".")
    assert java is not None
    return _Tools(java=java, firestore_jar=fs_jar, pubsub_jar=ps_jar)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def host_answers(host: str, timeout: float = 1.0) -> bool:
    """True when ``GET http://host/`` returns 200 (both emulators answer "Ok")."""
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def pid_alive(pid: int) -> bool:
    """Process exists and is not a zombie (an orphan's zombie lingers until init reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) not in ("Z", "X")


def _is_our_emulator(pid: int) -> bool:
    """Guard against pid reuse: the pid's command line must be an emulator JVM."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return False
    except OSError:
        r = _run_quiet(["ps", "-o", "command=", "-p", str(pid)], timeout=5)
        if r is None:
            return True  # cannot tell; the pid came from our own record
        cmdline = r.stdout
    return any(m in cmdline for m in _EMULATOR_MARKERS)


# Popen objects of processes started in this interpreter, so we can reap them.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session + process group: detached from our terminal
            close_fds=True,
        )
    _children[proc.pid] = proc
    return proc


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _reap(pid: int) -> None:
    proc = _children.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            _children.pop(pid, None)
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _stop_pid(pid: int, grace: float = STOP_GRACE) -> None:
    if not pid_alive(pid):
        _reap(pid)
        _children.pop(pid, None)
        return
    if pid not in _children and not _is_our_emulator(pid):
        return  # recorded pid now belongs to something else: never touch it
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return

    def signal_it(sig: int) -> None:
        try:
            if pgid == pid:  # we started it as its own group leader
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    signal_it(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            break
        time.sleep(0.05)
    else:
        signal_it(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            _reap(pid)
            if not pid_alive(pid):
                break
            time.sleep(0.05)
    proc = _children.pop(pid, None)
    if proc is not None:
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


@dataclass
class _Pending:
    name: str
    cmd_for_port: object  # Callable[[int], list[str]]
    log_prefix: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    attempts: int = 0
    fixed_port: int | None = None  # restart on this port (its clients keep their address)


def _launch(p: _Pending, state_dir: Path) -> None:
    p.port = p.fixed_port or _free_port()
    p.log = state_dir / f"{p.log_prefix}-{p.port}.log"
    p.proc = _spawn(p.cmd_for_port(p.port), p.log)  # type: ignore[operator]
    p.attempts += 1


def _wait_all(pending: list[_Pending], state_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(pending)
    while waiting:
        for p in list(waiting):
            assert p.proc is not None and p.log is not None
            if p.proc.poll() is not None:
                tail = _log_tail(p.log)
                _children.pop(p.proc.pid, None)
                if ("Address already in use" in tail or "BindException" in tail) and p.attempts < 3 + 7 * bool(p.fixed_port):
                    if p.fixed_port:
                        time.sleep(0.5)  # the old process is still letting go of the port
                    _launch(p, state_dir)  # lost the free-port race: try another port
                    continue
                raise EmulatorStartError(
                    f"{p.name} emulator exited with code {p.proc.returncode} before answering on "
                    f"{HOST}:{p.port}. Log {p.log}:\n{tail}"
                )
            if host_answers(f"{HOST}:{p.port}", timeout=0.5):
                waiting.remove(p)
        if not waiting:
            return
        if time.monotonic() > deadline:
            p = waiting[0]
            raise EmulatorStartError(
                f"{p.name} emulator did not answer on http://{HOST}:{p.port}/ within {timeout:.0f} s. "
                f"Log {p.log}:\n{_log_tail(p.log)}"  # type: ignore[arg-type]
            )
        time.sleep(0.1)


def _start(
    project: str, *, firestore: bool, pubsub: bool, state_dir: Path, timeout: float = START_TIMEOUT,
    ports: dict[str, int] | None = None,
) -> tuple[str | None, str | None, tuple[int, ...]]:
    tools = _locate(firestore=firestore, pubsub=pubsub)
    state_dir.mkdir(parents=True, exist_ok=True)
    ports = ports or {}
    pending: list[_Pending] = []
    if firestore:
        pending.append(
            _Pending(
                "Firestore",
                lambda port: [
                    tools.java, "-Duser.language=en", "-cp", str(tools.firestore_jar), FIRESTORE_MAIN,
                    "start", f"--host={HOST}", f"--port={port}",
                ],
                "firestore",
                fixed_port=ports.get("firestore"),
            )
        )
    if pubsub:
        pending.append(
            _Pending(
                "Pub/Sub",
                lambda port: [tools.java, "-jar", str(tools.pubsub_jar), f"--host={HOST}", f"--port={port}"],
                "pubsub",
                fixed_port=ports.get("pubsub"),
            )
        )
    try:
        for p in pending:
            _launch(p, state_dir)  # start all first: the JVMs boot in parallel
        _wait_all(pending, state_dir, timeout)
    except BaseException:
        for p in pending:
            if p.proc is not None:
                _stop_pid(p.proc.pid, grace=3)
        raise
    hosts = {p.name: f"{HOST}:{p.port}" for p in pending}
    pids = tuple(p.proc.pid for p in pending if p.proc is not None)
    return hosts.get("Firestore"), hosts.get("Pub/Sub"), pids


def _ensure_state_dir(state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        try:
            ignore.write_text("# boxoffice dev stack state and emulator logs\n*\n")
        except OSError:
            pass
    return state_dir


def start_stack(project: str = "demo-boxoffice", *, pubsub: bool = True, state_dir: Path | None = None) -> Stack:
    """Start the Firestore (and Pub/Sub) emulator; logs go to ``state_dir`` (default: default_state_dir())."""
    sd = _ensure_state_dir(Path(state_dir) if state_dir is not None else default_state_dir())
    fs_host, ps_host, pids = _start(project, firestore=True, pubsub=pubsub, state_dir=sd)
    assert fs_host is not None
    return Stack(project=project, firestore_host=fs_host, pubsub_host=ps_host, pids=pids, state_dir=sd)


def stop_stack(stack: Stack) -> None:
    """Stop the processes this code started for ``stack`` (SIGTERM the group, then SIGKILL)."""
    for pid in stack.pids:
        _stop_pid(pid)


def start_pubsub_emulator(state_dir: Path, *, port: int | None = None, project: str = "demo-boxoffice") -> tuple[str, int]:
    """Start a Pub/Sub emulator of its own, on ``port`` when given, else a free one; returns
    (host, pid). Chaos tests use it to stop the emulator and start it again on the same port
    (``restart_pubsub_emulator``), as an operator or a crash would: its clients keep their
    address and find it empty (it keeps topics, subscriptions and messages in memory only)."""
    _, host, pids = _start(project, firestore=False, pubsub=True, state_dir=_ensure_state_dir(state_dir),
                           ports={"pubsub": port} if port else None)
    assert host is not None
    return host, pids[0]


def restart_pubsub_emulator(host: str, pid: int, state_dir: Path, *, down_s: float = 0.0) -> int:
    """Stop the Pub/Sub emulator ``pid`` serving ``host``, wait ``down_s``, start a new one on the
    same port; returns the new pid."""
    stop_emulator(pid)
    time.sleep(down_s)
    return start_pubsub_emulator(state_dir, port=int(host.rsplit(":", 1)[1]))[1]


def stop_emulator(pid: int) -> None:
    """Stop one emulator started by this process (SIGTERM its group, then SIGKILL)."""
    _stop_pid(pid)


# --------------------------------------------------------------------------- state (dev up)


def default_state_dir() -> Path:
    env = os.environ.get("BOXOFFICE_STATE_DIR")
    return Path(env) if env else Path.cwd() / ".boxoffice"


def state_file(state_dir: Path | None = None) -> Path:
    return (state_dir or default_state_dir()) / STATE_FILE_NAME


def write_state(stack: Stack) -> Path:
    path = state_file(_ensure_state_dir(stack.state_dir))
    data = {
        "project": stack.project,
        "firestore_host": stack.firestore_host,
        "pubsub_host": stack.pubsub_host,
        "pids": list(stack.pids),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "state_dir": str(stack.state_dir),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_state(state_dir: Path | None = None) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(state_file(state_dir).read_text())
        return state
    except (OSError, ValueError):
        return None


def remove_state(state_dir: Path | None = None) -> None:
    try:
        state_file(state_dir).unlink()
    except FileNotFoundError:
        pass


def recorded_stack(state_dir: Path | None = None, *, check_hosts: bool = True) -> Stack | None:
    """The stack `dev up` recorded, if all its pids are alive emulators (and answer). pids are the recorded ones."""
    data = read_state(state_dir)
    if not data:
        return None
    try:
        pids = tuple(int(p) for p in data["pids"])
        fs_host = str(data["firestore_host"])
        ps_host = data.get("pubsub_host")
        project = str(data.get("project") or "demo-boxoffice")
    except (KeyError, TypeError, ValueError):
        return None
    if not pids or not all(pid_alive(p) and _is_our_emulator(p) for p in pids):
        return None
    if check_hosts and not all(host_answers(h) for h in (fs_host, ps_host) if h):
        return None
    return Stack(project=project, firestore_host=fs_host, pubsub_host=ps_host, pids=pids,
                 state_dir=state_dir or default_state_dir())


# --------------------------------------------------------------------------- using a stack


def _wait_answers(host: str, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not host_answers(host):
        if time.monotonic() > deadline:
            raise EmulatorStartError(f"{what}={host} is set but nothing answers on http://{host}/")
        time.sleep(0.2)


_ENV_KEYS = ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT")


_sigterm_received = False


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    global _sigterm_received
    _sigterm_received = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise KeyboardInterrupt("SIGTERM")


def _ignore_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextmanager
def sigterm_unwinds(enabled: bool = True) -> Iterator[Callable[[], None]]:
    """While inside, a SIGTERM (``timeout``, a CI runner, a supervisor) raises ``KeyboardInterrupt``
    in the main thread, as Ctrl-C does, so the ``finally`` blocks and pytest's session teardown
    that stop what this process started (by pid) run, instead of the process dying with its
    emulators left behind. Yields ``unwinding()``: call it first thing in that cleanup, so that a
    SIGTERM cannot cut the cleanup short (ignored until the block is left; for good once one came).

    Nests (an Auth emulator inside a stack). Does nothing when not ``enabled``, off the main thread
    (signals are delivered there only), or when SIGTERM has a handler of someone else's."""
    previous = signal.getsignal(signal.SIGTERM)
    if not enabled or threading.current_thread() is not threading.main_thread() or \
            previous not in (signal.SIG_DFL, _interrupt_on_sigterm):
        yield lambda: None
        return
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        yield _ignore_sigterm
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN if _sigterm_received else previous)


@contextmanager
def running_stack(project: str = "demo-boxoffice", *, pubsub: bool = True) -> Iterator[Stack]:
    """A stack to use: emulators from FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST, else the one
    `boxoffice dev up` recorded, else our own (stopped on exit, a SIGTERM's too:
    ``sigterm_unwinds``). Sets the emulator env vars inside."""
    env_fs = os.environ.get("FIRESTORE_EMULATOR_HOST") or None
    env_ps = (os.environ.get("PUBSUB_EMULATOR_HOST") or None) if pubsub else None
    sd = default_state_dir()
    fs_host, ps_host = env_fs, env_ps
    if env_fs:
        _wait_answers(env_fs, "FIRESTORE_EMULATOR_HOST")
    if env_ps:
        _wait_answers(env_ps, "PUBSUB_EMULATOR_HOST")
    need_fs = fs_host is None
    need_ps = pubsub and ps_host is None
    if need_fs or need_ps:
        rec = recorded_stack(sd)
        if rec is not None:
            if need_fs:
                fs_host, need_fs = rec.firestore_host, False
            if need_ps and rec.pubsub_host:
                ps_host, need_ps = rec.pubsub_host, False
    own: tuple[int, ...] = ()
    with sigterm_unwinds(enabled=need_fs or need_ps) as unwinding:
        if need_fs or need_ps:
            _ensure_state_dir(sd)
            new_fs, new_ps, own = _start(project, firestore=need_fs, pubsub=need_ps, state_dir=sd)
            fs_host = fs_host or new_fs
            ps_host = ps_host or new_ps
        assert fs_host is not None
        stack = Stack(project=project, firestore_host=fs_host, pubsub_host=ps_host, pids=own, state_dir=sd)
        saved = {k: os.environ.get(k) for k in _ENV_KEYS}
        try:
            os.environ["FIRESTORE_EMULATOR_HOST"] = fs_host
            if ps_host:
                os.environ["PUBSUB_EMULATOR_HOST"] = ps_host
            os.environ["GOOGLE_CLOUD_PROJECT"] = project
            os.environ["GCLOUD_PROJECT"] = project
            yield stack
        finally:
            unwinding()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            stop_stack(stack)


def clear_firestore(stack_or_host: Stack | str, project: str | None = None) -> None:
    """Delete every document of ``project`` in the emulator (Stack, or "host:port")."""
    if isinstance(stack_or_host, Stack):
        host = stack_or_host.firestore_host
        project = project or stack_or_host.project
    else:
        host = stack_or_host
    if not project:
        raise ValueError("clear_firestore needs a project when given a host")
    url = f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents"
    req = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(req, timeout=30) as resp:
        if resp.status != 200:
            raise RuntimeError(f"DELETE {url} returned {resp.status}")


RULES_FILE = Path(__file__).resolve().parents[3] / "firestore.rules"


def load_rules(host: str, project: str, rules: Path = RULES_FILE) -> None:
    """Make the emulator enforce ``firestore.rules`` for ``project``'s clients (web pages with
    ID tokens); without it the emulator lets every client read and write anything. The server
    SDKs' ``Bearer owner`` bypasses rules either way."""
    body = json.dumps({"rules": {"files": [{"name": "firestore.rules", "content": rules.read_text()}]}}).encode()
    url = f"http://{host}/emulator/v1/projects/{project}:securityRules"
    req = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:  # a cold emulator compiles rules slowly
        if resp.status != 200:
            raise RuntimeError(f"PUT {url} returned {resp.status}")


def firestore_client(stack: Stack) -> firestore.Client:
    """A google.cloud.firestore.Client talking to ``stack``'s emulator, whatever the environment says."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    client = firestore.Client(project=stack.project, credentials=AnonymousCredentials())
    # The client reads FIRESTORE_EMULATOR_HOST once, in __init__, into _emulator_host and uses it lazily
    # (insecure channel, target, "Bearer owner" metadata). Bind it to this stack explicitly.
    client._emulator_host = stack.firestore_host
    return client


def client_from_environment() -> firestore.Client:
    """A client on the emulator that FIRESTORE_EMULATOR_HOST and GOOGLE_CLOUD_PROJECT name
    (a child process of a command that runs a stack: the simulator's instances, allocators)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    host = os.environ["FIRESTORE_EMULATOR_HOST"]
    client = firestore.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "demo-boxoffice"),
                              credentials=AnonymousCredentials())
    client._emulator_host = host
    return client
