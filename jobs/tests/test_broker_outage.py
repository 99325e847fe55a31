"""RabbitMQ stopped for real (its node, not a patched ``enqueue``): a job started meanwhile
ends failed with a reason its owner sees, other writes are saved, and once the broker is
back jobs are queued again by the same process. Stops and restarts the test profile's
RabbitMQ node (``deploy.herd.services.RabbitMQ``), about 10 s."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from django.test import Client

from catalog import services as catalog_services
from catalog.models import Review
from deploy.herd.profiles import PROFILES
from deploy.herd.services import RabbitMQ
from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

REASON = "The job could not be queued (the job queue is unavailable). Please start it again."


def start_export(client: Client) -> Job:
    response = client.post("/jobs/start/catalog_export/", {"idempotency_key": ""})
    assert response.status_code == 302, response.content[:300]
    job_id = int(response["Location"].rstrip("/").rsplit("/", 1)[1])
    return Job.objects.for_id(job_id).get()


def test_a_job_started_while_the_broker_is_stopped_fails_with_a_reason_its_owner_sees(
    shopper, stopped, caplog, wait_for_replicas
):
    product = catalog_services.create_product(
        category=catalog_services.create_category(name="Queues", slug="queues"),
        name="Lamp",
        slug="lamp",
        price=Decimal("12.00"),
        stock=3,
    )
    wait_for_replicas()
    client = Client(raise_request_exception=False)
    client.force_login(shopper)
    with stopped(RabbitMQ(PROFILES["test"])), caplog.at_level(logging.ERROR):
        failed = start_export(client)
        review = client.post(f"/p/{product.slug}/review/", {"rating": 4, "text": "Written while the queue was down."})
        job_page = client.get(failed.get_absolute_url()).content.decode()
        notifications_page = client.get("/notifications/").content.decode()
    assert (failed.state, failed.error) == (Job.State.FAILED, REASON)
    assert REASON in job_page
    assert "Catalog export failed" in notifications_page and "could not be queued" in notifications_page
    # The review is saved; only the page rebuild it would have queued is skipped (and logged).
    assert review.status_code == 302
    assert Review.objects.using("default").filter(text="Written while the queue was down.").exists()
    assert "could not enqueue the rebuild" in caplog.text
    # Back: the same process queues the next job on a new connection.
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        queued = start_export(client)
    assert queued.state == Job.State.QUEUED
    assert "could not enqueue" not in caplog.text
