"""The herd the tests in this folder share: three app replicas (web1..web3,
``manage.py serve``) and HAProxy in front of them, on the test profile's ports,
against its PostgreSQL primary and replica, Redis and RabbitMQ, using the test
database. Started once for the folder and stopped at its end, with the drills' replica
health thresholds (a few seconds of replica lag cross them)."""

import pytest
from django.conf import settings

from deploy.drills import REPLICA_HEALTH_ENV
from deploy.herd.control import Herd
from deploy.herd.profiles import PROFILES


@pytest.fixture(scope="package")
def herd(django_db_setup, django_db_blocker):
    herd = Herd(
        PROFILES["test"], replicas=3, database=settings.DATABASES["default"]["NAME"], extra_env=REPLICA_HEALTH_ENV
    )
    herd.start_herd_processes()
    yield herd
    for process in [herd.haproxy(), *herd.webs()]:
        process.stop()
