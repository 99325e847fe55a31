"""The log-in throttle holds across replicas: failures made concurrently on two replicas
all count, and the third refuses. Uses the herd of deploy/tests/conftest.py (web1..web3
behind HAProxy), with the replicas' default limits; each request names its client
address in ``X-Forwarded-For``, which uvicorn believes from 127.0.0.1 (a trusted proxy)."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from accounts.tests.factories import PASSWORD
from deploy.visitor import Visitor

pytestmark = [pytest.mark.herd, pytest.mark.django_db(transaction=True, databases="__all__")]

ATTACKER, OWNER = "203.0.113.9", "198.51.100.7"
FREE_FAILURES = 5  # HERD_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS's default


@pytest.fixture
def alice(alice, wait_for_replicas):
    """The shared ``alice``, once the replica has her: the herd's replicas log in from it."""
    wait_for_replicas()
    return alice


def visitor_from(herd, address: str) -> Visitor:
    visitor = Visitor(herd.profile.url)
    visitor.client.headers["X-Forwarded-For"] = address
    return visitor


def test_concurrent_failures_on_two_replicas_lock_the_account_at_that_address_on_the_third(herd, alice):
    web1, web2, web3 = herd.webs()
    attackers = [visitor_from(herd, ATTACKER) for _ in range(FREE_FAILURES)]

    def guess(number: int):
        return attackers[number].log_in("alice", "wrong password", port=(web1, web2)[number % 2].port)

    with ThreadPoolExecutor(FREE_FAILURES) as pool:
        failed = list(pool.map(guess, range(FREE_FAILURES)))
    assert {response.status_code for response in failed} == {200}
    assert all("correct username and password" in response.text for response in failed)
    assert {response.headers["X-Served-By"] for response in failed} == {"web1", "web2"}

    refused = attackers[0].log_in("alice", PASSWORD, port=web3.port)
    assert (refused.status_code, refused.headers["X-Served-By"]) == (429, "web3")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "Too many failed log-in attempts" in refused.text
    assert attackers[0].whoami(port=web3.port)[0] is None

    owner = visitor_from(herd, OWNER)
    assert owner.log_in("alice", PASSWORD, port=web3.port).status_code == 302
    assert owner.whoami(port=web1.port)[0] == "alice"
