"""RabbitMQ stopped for real (its node, not a patched ``enqueue``): a job started meanwhile
is committed and stays queued, unsent (not failed: that was the behaviour before the outbox,
changed deliberately), other writes are saved, and once the broker is back the outbox sweep
sends it (``jobs.outbox``: called directly, and by the sweeper a Dramatiq worker boots) and it
succeeds once. Stops and restarts the test profile's RabbitMQ node
(``deploy.herd.services.RabbitMQ``), about 10 s each."""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import dramatiq
import pytest
from django.test import Client

from catalog import services as catalog_services
from catalog.models import Review
from deploy.herd.profiles import PROFILES
from deploy.herd.services import RabbitMQ
from jobs import outbox
from jobs.models import Job
from jobs.tests.conftest import run
from notifications.models import Notification
from scaling.sharding import shards

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def start_export(client: Client) -> Job:
    response = client.post("/jobs/start/catalog_export/", {"idempotency_key": ""})
    assert response.status_code == 302, response.content[:300]
    job_id = int(response["Location"].rstrip("/").rsplit("/", 1)[1])
    return reread(Job(pk=job_id))


def logged_in(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


@pytest.fixture
def product(wait_for_replicas):
    made = catalog_services.create_product(
        category=catalog_services.create_category(name="Queues", slug="queues"),
        name="Lamp",
        slug="lamp",
        price=Decimal("12.00"),
        stock=3,
    )
    wait_for_replicas()
    return made


def reread(job: Job) -> Job:
    """The job as its shard's primary has it now."""
    return Job.objects.using(shards.alias_of_shard(shards.shard_of_id(job.pk))).get(pk=job.pk)


def notifications_of(job: Job) -> int:
    return Notification.objects.for_user(job.owner_id).filter(job_id=job.pk).count()


def test_a_job_started_while_the_broker_is_stopped_stays_queued_and_is_sent_once_it_is_back(
    shopper, product, stopped, caplog
):
    client = logged_in(shopper)
    with stopped(RabbitMQ(PROFILES["test"])), caplog.at_level(logging.ERROR):
        waiting = start_export(client)
        review = client.post(f"/p/{product.slug}/review/", {"rating": 4, "text": "Written while the queue was down."})
        job_page = client.get(waiting.get_absolute_url()).content.decode()
        # A sweep while the broker is still down sends nothing and raises nothing.
        assert outbox.sweep(older_than=0) == 0
        still_waiting = reread(waiting)
    assert (waiting.state, waiting.sent_at, waiting.error) == (Job.State.QUEUED, None, "")
    assert still_waiting.sent_at is None and still_waiting.state == Job.State.QUEUED
    assert "<span data-job-state>queued</span>" in job_page and "Waiting for the job queue" in job_page
    assert "failed" not in job_page
    assert notifications_of(waiting) == 0
    # The review is saved; only the page rebuild it would have queued is skipped (and logged).
    assert review.status_code == 302
    assert Review.objects.using("default").filter(text="Written while the queue was down.").exists()
    assert "could not enqueue the rebuild" in caplog.text
    # Back: the sweep sends it, and the job runs to its end once, however often it is delivered.
    assert outbox.sweep(older_than=0) == 1
    assert reread(waiting).sent_at is not None
    assert outbox.sweep(older_than=0) == 0
    run(waiting)
    run(waiting)  # a second delivery (a sweep racing the start) changes nothing more
    done = reread(waiting)
    assert (done.state, done.attempts, notifications_of(done)) == (Job.State.SUCCEEDED, 1, 1)
    # And the same process sends the next job on a new connection, at once.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jobs.outbox"):
        queued = start_export(client)
    assert queued.state == Job.State.QUEUED and queued.sent_at is not None
    assert "could not send" not in caplog.text


def test_a_worker_sends_the_jobs_the_broker_missed_and_runs_them(shopper, product, stopped, settings):
    """The sweeper every worker process boots (``jobs.outbox.OutboxSweeper``), in a real
    ``dramatiq.Worker`` of this process: it sends the job once RabbitMQ is back, and the worker runs it."""
    settings.HERD_OUTBOX_SWEEP_SECONDS = 0.2
    broker = dramatiq.get_broker()
    assert any(isinstance(middleware, outbox.OutboxSweeper) for middleware in broker.middleware)
    client = logged_in(shopper)
    with stopped(RabbitMQ(PROFILES["test"])):
        waiting = start_export(client)
    assert waiting.sent_at is None
    broker.flush_all()  # messages other tests sent and no worker took: not this test's
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not (done := reread(waiting)).is_finished and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
    assert done.sent_at is not None
    assert (done.state, done.attempts, notifications_of(done)) == (Job.State.SUCCEEDED, 1, 1)
