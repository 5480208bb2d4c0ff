"""Shared fixtures. Only tests that request `stack` or `db` touch the emulators.

`stack` (session): the local emulator stack via running_stack(): emulators named by
FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST, else a `boxoffice dev up` stack, else its own
(started once, stopped at session end). Run `boxoffice dev up` once to make test runs start instantly.

`db` (function): a firestore.Client on the stack; all Firestore data is cleared BEFORE each
test, so a failing test leaves its data in the emulator to inspect.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `-m "not emulator"` runs only the tests that need no emulator.
    for item in items:
        if {"stack", "db"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.emulator)


@pytest.fixture(scope="session")
def stack() -> Iterator:
    from boxoffice.runtime.emulators import running_stack

    with running_stack() as s:
        yield s


@pytest.fixture
def db(stack):
    from boxoffice.runtime.emulators import clear_firestore, firestore_client

    clear_firestore(stack, stack.project)
    client = firestore_client(stack)
    yield client
    client.close()
