"""A user's job starts are limited: unfinished jobs at once, and starts per hour (a 429)."""

import pytest

from jobs.models import Job

pytestmark = pytest.mark.django_db


def start(client) -> int:
    return client.post("/jobs/start/catalog_export/", {}).status_code


def test_a_start_beyond_the_unfinished_jobs_limit_gets_a_429_until_one_finishes(client, shopper, make_user, settings):
    settings.HERD_UNFINISHED_JOBS_PER_USER = 2
    client.force_login(shopper)
    assert [start(client) for _ in range(3)] == [302, 302, 429]
    refused = client.post("/jobs/start/catalog_export/", {})
    assert refused["Retry-After"] == "60"
    assert "wait for one to finish" in refused.content.decode()
    assert Job.objects.for_user(shopper.pk).count() == 2
    finished = Job.objects.for_user(shopper.pk).first()
    Job.objects.for_id(finished.pk).update(state=Job.State.SUCCEEDED)
    assert start(client) == 302
    client.force_login(make_user("other"))
    assert start(client) == 302


def test_starts_beyond_the_hourly_limit_get_a_429_even_once_the_jobs_finished(client, shopper, settings):
    settings.HERD_JOB_STARTS_PER_USER_PER_HOUR = 2
    client.force_login(shopper)
    assert [start(client) for _ in range(2)] == [302, 302]
    Job.objects.for_user(shopper.pk).update(state=Job.State.SUCCEEDED)
    refused = client.post("/jobs/start/catalog_export/", {})
    assert refused.status_code == 429
    assert 3500 < int(refused["Retry-After"]) <= 3600
    assert Job.objects.for_user(shopper.pk).count() == 2
