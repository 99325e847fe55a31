"""The herd the tests in this folder share: three app replicas (web1..web3,
``manage.py serve``) and HAProxy in front of them, on the test profile's ports,
against its PostgreSQL primary and replica, Redis and RabbitMQ, using the test
database. Started once for the folder and stopped at its end, with the drills' replica
health thresholds (a few seconds of replica lag cross them).

The image (``built_image``, deploy/image.py): when its tests are selected, its build starts
as the suite does, niced, in a process of its own, and they run last, so the build
overlaps the rest of the suite; stopped at the suite's end if still running."""

import time

import pytest
from django.conf import settings

from deploy.drills import REPLICA_HEALTH_ENV
from deploy.herd.control import Herd
from deploy.herd.processes import HerdError
from deploy.herd.profiles import PROFILES
from deploy.image import BackgroundBuild

IMAGE_TESTS = "deploy/tests/test_image.py::"
# Long enough for a cold build (debootstrap, pip) on a busy 2-core machine.
IMAGE_BUILD_TIMEOUT = 1200
image_build = BackgroundBuild(release="test")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.nodeid.startswith(IMAGE_TESTS))  # stable: the image's last


def pytest_collection_finish(session):
    if not session.config.option.collectonly and any(item.nodeid.startswith(IMAGE_TESTS) for item in session.items):
        image_build.start()


def pytest_sessionfinish(session):
    image_build.stop()


@pytest.fixture(scope="session")
def built_image() -> str:
    """The image's name, once the build started with the suite has ended (skips where this
    machine cannot build it; fails with the build log's end if the build failed)."""
    started = time.monotonic()
    try:
        image, reason = image_build.result(IMAGE_BUILD_TIMEOUT)
    except HerdError as error:
        pytest.fail(str(error))
    print(f"image: the suite waited {time.monotonic() - started:.1f} s for its build")
    if image is None:
        pytest.skip(f"the image cannot be built here: {reason}")
    return image


@pytest.fixture(scope="package")
def herd(django_db_setup, django_db_blocker):
    herd = Herd(
        PROFILES["test"], replicas=3, database=settings.DATABASES["default"]["NAME"], extra_env=REPLICA_HEALTH_ENV
    )
    herd.start_herd_processes()
    yield herd
    for process in [herd.haproxy(), *herd.webs()]:
        process.stop()
