"""No emulator needed: locating tools and failing helpfully."""

from __future__ import annotations

import pytest

from boxoffice.runtime import emulators as em


@pytest.fixture
def no_tools(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("BOXOFFICE_GCLOUD_SDK_ROOT", str(tmp_path / "no-sdk"))
    monkeypatch.delenv("JAVA", raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return tmp_path


def test_missing_everything_raises_helpful_error(no_tools):
    with pytest.raises(em.EmulatorNotFound) as exc:
        em.start_stack(state_dir=no_tools / "state")
    msg = str(exc.value)
    assert "no-sdk" in msg
    assert "Java runtime not found" in msg
    assert "gcloud components install cloud-firestore-emulator pubsub-emulator" in msg
    assert "google-cloud-cli-firestore-emulator" in msg and "Java 11+" in msg


def test_bogus_java_path(no_tools, monkeypatch):
    monkeypatch.setenv("JAVA", str(no_tools / "nope" / "java"))
    with pytest.raises(em.EmulatorNotFound, match="JAVA="):
        em.start_stack(state_dir=no_tools / "state")


def test_sdk_without_components(no_tools, monkeypatch):
    sdk = no_tools / "sdk"
    (sdk / "platform").mkdir(parents=True)
    monkeypatch.setenv("BOXOFFICE_GCLOUD_SDK_ROOT", str(sdk))
    with pytest.raises(em.EmulatorNotFound) as exc:
        em.start_stack(state_dir=no_tools / "state")
    assert "Firestore emulator not installed" in str(exc.value)
    assert "Pub/Sub emulator not installed" in str(exc.value)


def test_nothing_started_for_missing_tools(no_tools):
    before = dict(em._children)
    with pytest.raises(em.EmulatorNotFound):
        em.start_stack(state_dir=no_tools / "state")
    assert em._children == before


def test_clear_firestore_needs_project():
    with pytest.raises(ValueError):
        em.clear_firestore("127.0.0.1:1", None)


def test_dead_pid_is_not_alive():
    import subprocess

    p = subprocess.Popen(["true"])
    p.wait()
    assert not em.pid_alive(p.pid)
