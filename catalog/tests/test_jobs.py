"""The catalog's kinds of job as the runner runs them: applied once, warming from the jobs page."""

from __future__ import annotations

import pytest
from django_redis import get_redis_connection

from catalog import cache as catalog_cache
from catalog import services as catalog_services
from catalog.models import Product
from jobs.models import Job
from jobs.services import start_job
from jobs.tasks import retry_when, run_job
from jobs.tests.conftest import csv_bytes, run
from notifications.models import Notification


@pytest.mark.django_db
def test_running_a_job_twice_applies_its_effect_once_and_notifies_once(staff):
    job = start_job(staff, "catalog_import", input_bytes=csv_bytes([("Lamp", "lamp", "lamps", "1", "1", "")]))
    run(job)
    first = Product.objects.get(slug="lamp").updated_at
    run(job)  # a redelivered message
    run_job.fn(str(job.pk))

    job.refresh_from_db()
    assert (job.state, job.attempts) == (Job.State.SUCCEEDED, 1)
    assert Product.objects.get(slug="lamp").updated_at == first
    assert Notification.objects.for_user(job.owner_id).filter(job=job).count() == 1


def test_a_product_that_no_longer_exists_is_never_retried():
    assert not retry_when(0, Product.DoesNotExist())


@pytest.mark.django_db
def test_a_staff_member_warms_the_cache_from_the_jobs_page(staff, client):
    lamps = catalog_services.create_category(name="Lamps", slug="lamps")
    for n in range(3):
        catalog_services.create_product(category=lamps, name=f"Lamp {n}", slug=f"lamp-{n}", price=1, stock=1)
    # The most visited pages are warmed first; visits recorded by anything else sharing
    # this Redis cannot outrank these.
    visits = get_redis_connection("default")
    for n in range(3):
        visits.zincrby(catalog_cache._VISITS, 10**12 - n, f"lamp-{n}")
    client.force_login(staff)
    response = client.post("/jobs/start/cache_warm/", {"products": 2})
    job = Job.objects.for_user(staff.pk).get()
    assert response.status_code == 302
    run(job)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result == {"product_pages": 2, "list_pages": 2}
    assert "Warmed 2 product pages and 2 lists." in client.get(f"/jobs/{job.pk}/").content.decode()
