"""Fixtures shared by the integration tests (the emulator fixtures are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from boxoffice.runtime.mailbox import LocalSmtpServer


@pytest.fixture
def smtp(tmp_path):
    """A real SMTP server (aiosmtpd) on a free port, writing this test's mailbox to disk."""
    server = LocalSmtpServer(tmp_path / "mail").start()
    yield server
    server.stop()
