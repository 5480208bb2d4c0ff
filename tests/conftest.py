"""Shared fixtures. Only tests that request `stack` or `db` touch the emulators.

`stack` (session): the local emulator stack via running_stack(): emulators named by
FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST, else a `boxoffice dev up` stack, else its own
(started once, stopped at session end, by pid; a run ended by SIGTERM, say by `timeout` or a CI
runner, unwinds like Ctrl-C and stops them too: `emulators.sigterm_unwinds`). Run `boxoffice dev
up` once to make test runs start instantly.

`allocator` (session): one allocator process (`boxoffice worker --only allocator`) on the
stack, as production runs it beside the app instances: purchases and holds are answered by it.

`db` (function): a firestore.Client on the stack (with the allocator running); all Firestore
data is cleared BEFORE each test, so a failing test leaves its data in the emulator to inspect.
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


@pytest.fixture(scope="session")
def allocator(stack) -> Iterator:
    from boxoffice.runtime.allocator import AllocatorProcesses

    # The inventory trigger's tests pin the trigger as the summary's writer: this allocator
    # leaves the summary alone (tests of the allocator's own summary start their own).
    with AllocatorProcesses(stack.firestore_host, stack.pubsub_host, stack.project,
                            settings={"BOXOFFICE_ALLOCATOR_SUMMARY": "off"}) as procs:
        yield procs


@pytest.fixture
def db(stack, allocator):
    from boxoffice.runtime.emulators import clear_firestore, firestore_client

    allocator.ensure_running()
    clear_firestore(stack, stack.project)
    client = firestore_client(stack)
    yield client
    client.close()
