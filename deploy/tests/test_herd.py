"""The herd behind the real load balancer.

Starts, on the test profile's ports: two app replicas (``manage.py serve``, web1 and
web2) and HAProxy in front of them, against the test profile's PostgreSQL primary and
replica, Redis and RabbitMQ, using the test database. Stops them all at the end.
"""

import os
import signal
import time
import urllib.request

import pytest
from django.conf import settings

from deploy.herd import PROFILES, Herd, pid_alive

pytestmark = [pytest.mark.herd, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def herd(django_db_setup, django_db_blocker):
    herd = Herd(PROFILES["test"], replicas=2, database=settings.DATABASES["default"]["NAME"])
    for web in herd.webs():
        web.ensure()
    herd.haproxy().ensure()
    yield herd
    for process in [herd.haproxy(), *herd.webs()]:
        process.stop()


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers["X-Served-By"]


def served_by(herd: Herd, requests: int) -> list[str]:
    answers = [get(herd.profile.url) for _ in range(requests)]
    assert {status for status, _ in answers} == {200}
    return [replica for _, replica in answers]


def wait_until(predicate, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"not within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_successive_requests_are_served_by_both_replicas(herd):
    assert set(served_by(herd, 10)) == {"web1", "web2"}


def test_a_killed_replica_is_taken_out_within_5_seconds_and_can_be_started_again(herd, capsys):
    web1, _ = herd.webs()
    os.kill(web1.pid(), signal.SIGKILL)

    # Requests keep succeeding while HAProxy notices: a refused connection is retried.
    seconds = wait_until(lambda: served_by(herd, 2) and herd.haproxy().server_states()["web1"].startswith("DOWN"), 5)
    assert seconds < 5
    assert set(served_by(herd, 6)) == {"web2"}

    herd.status()
    web1_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("web1 "))
    assert web1_line.split()[1] == "down"

    herd.start("web1")
    wait_until(lambda: herd.haproxy().server_states()["web1"] == "UP", 10)
    assert set(served_by(herd, 10)) == {"web1", "web2"}


def test_a_draining_replica_finishes_its_requests_and_leaves_the_rotation(herd):
    _, web2 = herd.webs()
    os.kill(web2.pid(), signal.SIGTERM)
    wait_until(lambda: herd.haproxy().server_states()["web2"].startswith("DOWN"), 5)
    assert set(served_by(herd, 4)) == {"web1"}
    wait_until(lambda: not web2.running(), 30)
    herd.start("web2")


def test_stopping_the_herd_leaves_no_process_behind(herd):
    processes = [herd.haproxy(), *herd.webs()]
    pids = [process.pid() for process in processes]
    assert all(pid_alive(pid) for pid in pids)
    for process in processes:
        process.stop()
    assert not any(pid_alive(pid) for pid in pids)
