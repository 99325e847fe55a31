"""The log-in throttle (accounts.backends, scaling.web.throttle) on the real Redis, through
the accounts log-in page and the admin's, from addresses set as uvicorn sets them."""

import time

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client

from accounts.tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

ATTACKER, OWNER = "203.0.113.9", "198.51.100.7"


def log_in(client: Client, username: str, password: str = PASSWORD, address: str = ATTACKER, path="/accounts/login/"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


def fail(client: Client, username: str, times: int, address: str = ATTACKER, path="/accounts/login/") -> None:
    for _ in range(times):
        response = log_in(client, username, "wrong password", address, path)
        assert response.status_code == 200, response.status_code
        assert "correct username and password" in response.content.decode()


def assert_refused(response) -> None:
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert "Too many failed log-in attempts. Try again in" in response.content.decode()


def test_five_failures_refuse_even_the_right_password_with_a_429_saying_when(client, alice):
    fail(client, "alice", 5)
    refused = log_in(client, "alice")
    assert_refused(refused)
    assert refused["Retry-After"] == "60"
    assert "Try again in 60 seconds." in refused.content.decode()
    assert SESSION_KEY not in client.session


def test_an_empty_password_does_not_reset_the_failures(client, alice):
    fail(client, "alice", 4)
    empty = log_in(client, "alice", "")
    assert empty.status_code == 200
    fail(client, "alice", 1)
    assert_refused(log_in(client, "alice"))


def test_the_admin_login_is_throttled_like_the_accounts_one(client, alice):
    alice.is_staff = True
    alice.save(update_fields=["is_staff"])
    for _ in range(7):
        assert log_in(client, "alice", "wrong password", path="/admin/login/").status_code in (200, 429)
    assert_refused(log_in(client, "alice", path="/admin/login/"))
    assert SESSION_KEY not in client.session


def test_failures_on_the_admin_and_the_accounts_page_count_together(client, alice):
    fail(client, "alice", 3, path="/admin/login/")
    fail(client, "alice", 2)
    assert_refused(log_in(client, "alice"))


def test_a_look_alike_name_counts_against_the_account_it_matches(client, alice):
    fail(client, "\uff41\uff4c\uff49\uff43\uff45", 5)  # fullwidth "alice", NFKC-normalised to it
    assert_refused(log_in(client, "alice"))


def test_the_owner_logs_in_from_a_fresh_address_while_the_attackers_is_locked(client, alice):
    fail(client, "alice", 5, address=ATTACKER)
    assert_refused(log_in(client, "alice", address=ATTACKER))
    assert log_in(Client(), "alice", address=OWNER).status_code == 302


def test_failures_across_accounts_lock_the_address_for_every_account(client, alice, bob, settings):
    settings.HERD_LOGIN_FAILURES_PER_ADDRESS = 3
    for name in ("nobody1", "alice", "nobody2"):
        fail(client, name, 1)
    assert_refused(log_in(client, "bob"))
    assert log_in(Client(), "bob", address=OWNER).status_code == 302


def test_each_failure_after_the_free_ones_doubles_the_lock_up_to_its_cap(client, alice, settings):
    settings.HERD_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS = 2
    settings.HERD_LOGIN_LOCK_SECONDS = 1
    settings.HERD_LOGIN_MAX_LOCK_SECONDS = 2
    fail(client, "alice", 2)
    assert log_in(client, "alice")["Retry-After"] == "1"
    assert log_in(client, "alice").status_code == 429  # refused attempts do not renew the lock
    time.sleep(1.05)
    fail(client, "alice", 1)
    assert log_in(client, "alice")["Retry-After"] == "2"
    time.sleep(2.05)
    fail(client, "alice", 1)
    assert log_in(client, "alice")["Retry-After"] == "2"


def test_a_success_clears_its_own_pair_but_never_the_address(client, alice, bob, settings):
    settings.HERD_LOGIN_FAILURES_PER_ADDRESS = 10
    fail(client, "alice", 4)
    assert log_in(client, "alice").status_code == 302
    client.post("/accounts/logout/")
    fail(client, "alice", 4)  # counted afresh: 4 of 5, not 8
    assert log_in(client, "alice").status_code == 302
    client.post("/accounts/logout/")
    fail(client, "nobody", 2)  # the address's 9th and 10th failures: the successes did not clear them
    assert_refused(log_in(client, "bob"))
