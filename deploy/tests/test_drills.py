"""The fault drills, short: a replica SIGKILLed, the session Redis restarted, a burst of
bad requests, each under a steady load through HAProxy (``deploy/drills.py``).

Uses the herd of deploy/tests/conftest.py (web1..web3 behind HAProxy), restarts web2
and the test profile's session Redis once each. Targets: no failed idempotent request,
no acknowledged write missing from the primary, no lost session, no 500, no crashed
replica; only the failures each drill's design expects (see docs/RELIABILITY.md).
"""

import pytest

from deploy import drills

pytestmark = [
    pytest.mark.herd,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("clear_login_throttles"),
]

QUICK = drills.Timing(warmup=1.0, hold=1.0, settle=1.0)


@pytest.fixture
def rig(herd, wait_for_replicas) -> drills.Rig:
    shoppers, staff = drills.make_shoppers("t")
    wait_for_replicas()
    drills.wait_all_up(herd)
    return drills.Rig(herd, shoppers, staff, QUICK, browsers=1)


@pytest.mark.parametrize("drill", [drills.ReplicaKill, drills.SessionRedisRestart, drills.BadRequests])
def test_the_drill_meets_its_target(rig, drill):
    result = drills.run_drill(rig, drill())
    assert result.passed, f"{result.row()}\n" + "\n".join(result.notes)
    assert result.report.requests > 50
    assert len(result.report.saved_reviews) > 3
    assert result.writes_found == len(result.report.saved_reviews)
