"""Fault drills of ``deploy/drills.py``, in their short form (``drills.SHORT``), each under a
steady load through HAProxy.

Uses the herd of deploy/tests/conftest.py (web1..web3 behind HAProxy) and starts one
Dramatiq worker of the test profile for the module. Breaks, one drill at a time and
back: web2 (SIGKILL, SIGTERM), the PostgreSQL replica (stopped, lagging), the session
and cache Redis, the state Redis's primary node (SIGKILLed under Sentinel: for that drill
the app replicas reach ``sentinel_profile``'s nodes), the worker (SIGKILL), RabbitMQ and
the PostgreSQL primary (stopped: the site read-only); then, with the app replicas
restarted to reach the cache and session Redis and the primary through fault proxies
(``deploy/faults.py``), the cache Redis cut off, the session Redis slow, and the primary
cut off and slow. Targets: no failed idempotent request, no acknowledged write missing
from the primary, no lost session, no stale read, no 500, no crashed replica; only the
failures each drill's design expects (see docs/RELIABILITY.md).
"""

import shutil

import pytest
from django.conf import settings

from deploy import drills
from deploy.faults import Faults
from deploy.herd.app import Worker
from deploy.herd.profiles import PROFILES, sentinel_profile
from deploy.herd.services import state_redis

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
def sentinel_state(herd):
    """For one test, the app replicas reach a state Redis under Sentinel: ``sentinel_profile``'s
    two nodes and three Sentinels, new; then their own single node again."""
    profile = sentinel_profile(PROFILES["test"])
    processes = state_redis(profile)
    shutil.rmtree(profile.state, ignore_errors=True)
    for process in processes:
        process.start()
    plain = herd.extra_env
    herd.extra_env = {**plain, **profile.sentinel_env()}
    restart_webs(herd)
    yield
    herd.extra_env = plain
    restart_webs(herd)
    for process in reversed(processes):
        process.stop()
    shutil.rmtree(profile.state, ignore_errors=True)


@pytest.fixture
def rig(request, herd, worker, wait_for_replicas) -> drills.Rig:
    shoppers, staff = drills.make_shoppers("t")
    drill = drills.DRILLS[request.getfixturevalue("name")]
    if drill.needs_sentinel:
        request.getfixturevalue("sentinel_state")
    proxied = getattr(drill, "service", None)
    faults = request.getfixturevalue("faults") if proxied else None
    wait_for_replicas()
    drills.wait_all_up(herd)
    return drills.Rig(
        herd, shoppers, staff, drills.SHORT, browsers=1, worker=worker, job_products=JOB_PRODUCTS, faults=faults
    )


# The suite's herd runs the plain tier: the drills that need Patroni are make drills' (the
# failover itself has deploy/tests/test_failover.py).
@pytest.mark.parametrize(
    "name", [name for name, drill in drills.DRILLS.items() if name not in NOT_IN_SUITE and not drill.needs_patroni]
)
def test_the_drill_meets_its_target(rig, name):
    result = drills.run_drill(rig, drills.DRILLS[name]())
    assert result.passed, f"{result.row()}\n" + "\n".join(result.notes)
    assert result.report.requests > 20, "too little load ran through the fault to prove anything"
    assert result.report.saved_reviews
    assert result.writes_found == len(result.report.saved_reviews)
