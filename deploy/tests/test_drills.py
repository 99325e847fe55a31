"""Every fault drill of ``deploy/drills.py``, in its short form (``drills.SHORT``), each under a
steady load through HAProxy.

Uses the herd of deploy/tests/conftest.py (web1..web3 behind HAProxy) and starts one
Dramatiq worker of the test profile for the module. Breaks, one drill at a time and
back: web2 (SIGKILL, SIGTERM), the PostgreSQL replica (stopped, lagging), the session
and cache Redis, the worker (SIGKILL) and RabbitMQ. Targets: no failed idempotent
request, no acknowledged write missing from the primary, no lost session, no stale
read, no 500, no crashed replica; only the failures each drill's design expects (see
docs/RELIABILITY.md).
"""

import pytest
from django.conf import settings

from deploy import drills
from deploy.herd.app import Worker
from deploy.herd.profiles import PROFILES

pytestmark = [
    pytest.mark.herd,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("clear_login_throttles"),
]

# Enough for the export to be killed mid-way on this machine, few enough to load in seconds.
JOB_PRODUCTS = 40_000


@pytest.fixture(scope="module")
def worker(herd):
    process = Worker(PROFILES["test"], settings.DATABASES["default"]["NAME"], drills.REPLICA_HEALTH_ENV)
    process.ensure()
    yield process
    process.stop()


@pytest.fixture
def rig(herd, worker, wait_for_replicas) -> drills.Rig:
    shoppers, staff = drills.make_shoppers("t")
    wait_for_replicas()
    drills.wait_all_up(herd)
    return drills.Rig(herd, shoppers, staff, drills.SHORT, browsers=1, worker=worker, job_products=JOB_PRODUCTS)


@pytest.mark.parametrize("name", list(drills.DRILLS))
def test_the_drill_meets_its_target(rig, name):
    result = drills.run_drill(rig, drills.DRILLS[name]())
    assert result.passed, f"{result.row()}\n" + "\n".join(result.notes)
    assert result.report.requests > 20, "too little load ran through the fault to prove anything"
    assert result.report.saved_reviews
    assert result.writes_found == len(result.report.saved_reviews)
