"""Accounts fixtures: users made through the services."""

import pytest

from accounts import pictures, services

PASSWORD = "a-long-test-password-42"


@pytest.fixture
def alice():
    return services.create_user(username="alice", email="alice@example.com", password=PASSWORD)


@pytest.fixture
def bob():
    return services.create_user(username="bob", email="bob@example.com", password=PASSWORD)


@pytest.fixture
def decode_slots_taken(settings):
    """Every picture decode slot of this process held, as by concurrent uploads; a short wait for one."""
    settings.HERD_PICTURE_DECODE_WAIT_SECONDS = 0.05
    for _ in range(settings.HERD_PICTURE_DECODES):
        assert pictures._decode_slots.acquire(blocking=False)
    yield
    for _ in range(settings.HERD_PICTURE_DECODES):
        pictures._decode_slots.release()
