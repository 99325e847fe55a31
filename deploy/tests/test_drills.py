"""Fault drills of ``deploy/drills.py``, in their short form (``drills.SHORT``), each under a
steady load through HAProxy.

Uses the herd of deploy/tests/conftest.py (web1..web3 behind HAProxy) and starts one
Dramatiq worker of the test profile for the module. Breaks, one drill at a time and
back: web2 (SIGKILL, SIGTERM), the PostgreSQL replica (stopped, lagging), the session
and cache Redis, the worker (SIGKILL), RabbitMQ and the PostgreSQL primary (stopped: the
site read-only); then, with the app replicas restarted to reach the cache and session
Redis and the primary through fault proxies (``deploy/faults.py``), the cache Redis cut
off, the session Redis slow, and the primary cut off and slow. Targets: no
failed idempotent request, no acknowledged write missing from the primary, no lost
session, no stale read, no 500, no crashed replica; only the failures each drill's
design expects (see docs/RELIABILITY.md).
"""

import pytest
from django.conf import settings

from deploy import drills
from deploy.faults import Faults
from deploy.herd.app import Worker
from deploy.herd.profiles import PROFILES

pytestmark = [
    pytest.mark.herd,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("clear_login_throttles"),
]

# Enough for the export to be killed mid-way on this machine, few enough to load in seconds.
JOB_PRODUCTS = 40_000
# Drills only ``make drills`` runs: they need a proxy of the replica or the broker, which
# the test herd has not, or a long hold; the slow cache Redis and the slow replica have
# tests of their own through the same proxy (docs/RELIABILITY.md).
NOT_IN_SUITE = {"cache-redis-slow", "replica-slow", "replica-partition", "broker-partition"}
PROXIED = ("redis-cache", "redis-state", "postgres-primary")


@pytest.fixture(scope="module")
def worker(herd):
    process = Worker(PROFILES["test"], settings.DATABASES["default"]["NAME"], drills.REPLICA_HEALTH_ENV)
    process.ensure()
    yield process
    process.stop()


def restart_webs(herd) -> None:
    """Every app replica stopped and started again (together: no load runs meanwhile)."""
    herd.drain(herd.webs(), None)
    for web in herd.webs():
        web.launch()
    for web in herd.webs():
        web.wait_ready()
    drills.wait_all_up(herd)


@pytest.fixture(scope="module")
def faults(herd):
    """The app replicas reach the Redis servers through fault proxies, for the module's rest."""
    proxies = Faults(PROFILES["test"], PROXIED)
    plain = herd.extra_env
    herd.extra_env = {**plain, **proxies.env(herd.database)}
    restart_webs(herd)
    yield proxies
    herd.extra_env = plain
    restart_webs(herd)
    proxies.close()


@pytest.fixture
def rig(request, herd, worker, wait_for_replicas) -> drills.Rig:
    shoppers, staff = drills.make_shoppers("t")
    proxied = getattr(drills.DRILLS[request.getfixturevalue("name")], "service", None)
    faults = request.getfixturevalue("faults") if proxied else None
    wait_for_replicas()
    drills.wait_all_up(herd)
    return drills.Rig(
        herd, shoppers, staff, drills.SHORT, browsers=1, worker=worker, job_products=JOB_PRODUCTS, faults=faults
    )


@pytest.mark.parametrize("name", [name for name in drills.DRILLS if name not in NOT_IN_SUITE])
def test_the_drill_meets_its_target(rig, name):
    result = drills.run_drill(rig, drills.DRILLS[name]())
    assert result.passed, f"{result.row()}\n" + "\n".join(result.notes)
    assert result.report.requests > 20, "too little load ran through the fault to prove anything"
    assert result.report.saved_reviews
    assert result.writes_found == len(result.report.saved_reviews)
