"""The API's batched user lookups (api.auth.UserLookups): pure, no Auth emulator."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from boxoffice.api.auth import UserLookups


class Directory:
    """A user directory whose answers can change, counting the calls made to it."""

    def __init__(self) -> None:
        self.users = {f"u{i}": f"record-{i}" for i in range(300)}
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def fetch(self, uids: list[str]) -> dict[str, str]:
        with self.lock:
            self.calls.append(list(uids))
            return {u: self.users[u] for u in uids if u in self.users}


def test_concurrent_lookups_share_few_calls_of_at_most_100_users():
    directory = Directory()
    lookups = UserLookups(directory.fetch, window_s=0.05)
    with ThreadPoolExecutor(150) as pool:
        got = list(pool.map(lookups.get, [f"u{i}" for i in range(250)]))
    assert got == [f"record-{i}" for i in range(250)]
    assert len(directory.calls) < 20  # not one call per request
    assert all(len(call) <= 100 for call in directory.calls)


def test_a_lookup_is_never_answered_from_before_it_was_asked():
    directory = Directory()
    lookups = UserLookups(directory.fetch, window_s=0.001)
    assert lookups.get("u1") == "record-1"
    del directory.users["u1"]  # the user is deleted: the next request must see it
    assert lookups.get("u1") is None
    assert len(directory.calls) == 2


def test_a_failed_call_fails_every_request_of_its_batch():
    def broken(uids: list[str]) -> dict[str, str]:
        raise RuntimeError("auth down")

    lookups = UserLookups(broken, window_s=0.02)
    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(lookups.get, f"u{i}") for i in range(5)]
    for f in futures:
        with pytest.raises(RuntimeError, match="auth down"):
            f.result()
