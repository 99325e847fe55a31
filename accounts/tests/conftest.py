"""Accounts fixtures: users made through the services."""

import pytest

from accounts import services

PASSWORD = "a-long-test-password-42"


@pytest.fixture
def alice():
    return services.create_user(username="alice", email="alice@example.com", password=PASSWORD)


@pytest.fixture
def bob():
    return services.create_user(username="bob", email="bob@example.com", password=PASSWORD)
