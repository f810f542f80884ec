"""Session-wide fixtures for the protocol tests (Argon2id keys are derived once)."""

from __future__ import annotations

import pytest

from asciichat_server.protocol import crypto


@pytest.fixture(scope="session")
def password_key() -> bytes:
    # Argon2id costs ~0.1-0.3 s: derive once for the whole run.
    return crypto.derive_password_key("password123")


@pytest.fixture(scope="session")
def wrong_password_key() -> bytes:
    return crypto.derive_password_key("not-the-password")
