"""The job runner: idempotent under redelivery, retries only what may pass, and always ends with a reason."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, InterfaceError, OperationalError
from django.test import Client
from dramatiq import get_broker
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs import kinds, outbox
from jobs.kinds import JobRefused
from jobs.models import Job
from jobs.services import IdempotencyKeyReused, start_job
from jobs.tasks import MAX_RETRIES, give_up_job, retry_when, run_job
from jobs.tests.conftest import all_jobs, run
from notifications.models import Notification
from scaling.sharding import shards
from scaling.web.storage import private_storage


@pytest.mark.django_db
def test_a_second_completion_notification_for_one_job_is_refused_by_the_database(shopper):
    job = start_job(shopper, "catalog_export")
    run(job)
    with pytest.raises(IntegrityError), shards.writing_for_user(shopper.pk) as alias:
        Notification.objects.using(alias).create(
            user_id=shopper.pk, kind=Notification.Kind.JOB_FINISHED, title="again", job=job
        )


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("server closed the connection unexpectedly"),
        InterfaceError("connection already closed"),
        RedisConnectionError("Connection refused"),
        RedisTimeoutError("Timeout reading from socket"),
        ConnectionClosed(Exception("broker went away")),
    ],
    ids=type,
)
def test_transient_errors_are_retried_a_few_times(error):
    assert all(retry_when(retries, error) for retries in range(MAX_RETRIES))
    assert not retry_when(MAX_RETRIES, error)


@pytest.mark.parametrize(
    "error",
    [
        JobRefused("bad file"),
        IntegrityError("duplicate key"),
        ValueError("a bug"),
        KeyError("kind"),
    ],
    ids=type,
)
def test_permanent_errors_are_never_retried(error):
    assert not retry_when(0, error)


def test_the_actor_carries_the_retry_policy():
    assert run_job.options["retry_when"] is retry_when
    assert run_job.options["on_retry_exhausted"] == give_up_job.actor_name
    assert run_job.options["max_backoff"] <= 5 * 60 * 1000


@pytest.mark.django_db
def test_when_retries_run_out_the_job_fails_with_a_reason_and_one_notification(shopper):
    job = start_job(shopper, "catalog_export")
    message = {"args": [str(job.pk)], "kwargs": {}, "options": {}}
    give_up_job.fn(message, {"retries": MAX_RETRIES, "max_retries": None})
    give_up_job.fn(message, {"retries": MAX_RETRIES, "max_retries": None})
    run(job)  # a late delivery changes nothing

    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.error.startswith("The job kept meeting a temporary problem")
    assert f"after {MAX_RETRIES + 1} attempts" in job.error
    assert Notification.objects.for_user(job.owner_id).filter(job=job).count() == 1
    assert job.attempts == 0


@pytest.mark.django_db
def test_an_unexpected_error_fails_the_job_without_internals(shopper):
    job = start_job(shopper, "catalog_export")
    give_up_job.fn({"args": [str(job.pk)]}, {"retries": 0})
    job.refresh_from_db()
    assert job.error == "The job stopped on an unexpected error; the team can find the details in the logs."


@pytest.mark.django_db
def test_a_message_for_a_missing_or_malformed_job_id_is_dropped():
    run_job.fn(str((1 << 40) << 23))  # a well-formed id no job has
    run_job.fn("not-an-id")
    give_up_job.fn({"args": ["not-an-id"]}, {"retries": 0})


@pytest.mark.django_db
def test_the_same_idempotency_key_returns_the_first_job(shopper):
    first = start_job(shopper, "catalog_export", idempotency_key="form-1")
    assert start_job(shopper, "catalog_export", idempotency_key="form-1") == first
    assert start_job(shopper, "catalog_export", idempotency_key="form-2") != first
    with pytest.raises(IdempotencyKeyReused):
        start_job(shopper, "picture_thumbnail", idempotency_key="form-1")
    assert len(all_jobs()) == 2


@pytest.mark.django_db
def test_a_form_sent_twice_starts_one_job(shopper, client):
    client.force_login(shopper)
    key = client.get("/jobs/").context["forms"]["catalog_export"].initial["idempotency_key"]
    client.post("/jobs/start/catalog_export/", {"idempotency_key": key})
    client.post("/jobs/start/catalog_export/", {"idempotency_key": key})
    assert Job.objects.for_user(shopper.pk).count() == 1


class SentMessages(Middleware):
    def __init__(self) -> None:
        self.messages = []

    def after_enqueue(self, broker, message, delay) -> None:
        self.messages.append(message)


@pytest.fixture
def sent_messages():
    broker = get_broker()
    recorder = SentMessages()
    broker.add_middleware(recorder)
    yield recorder.messages
    broker.middleware.remove(recorder)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_starting_a_job_sends_one_message_with_its_id_after_commit(staff, sent_messages):
    # The job row commits on its owner's shard: a transaction open there holds the message back.
    with shards.writing_for_user(staff.pk):
        job = start_job(staff, "catalog_import", input_bytes=b"name,slug,category,price,stock,description\n")
        assert [m for m in sent_messages if m.actor_name == run_job.actor_name] == []
    sent = [m for m in sent_messages if m.actor_name == run_job.actor_name]
    assert [(m.args, m.kwargs) for m in sent] == [((str(job.pk),), {})]
    assert private_storage().exists(Job.objects.for_id(job.pk).get().input_name)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_job_that_cannot_be_queued_stays_queued_unsent_until_a_sweep_sends_it(shopper, monkeypatch, sent_messages):
    # Before the outbox it ended failed ("please start it again"); it now waits for the broker.
    broker = get_broker()

    def broker_down(*args, **kwargs):
        raise ConnectionClosed(Exception("RabbitMQ is down"))

    with monkeypatch.context() as patched:
        patched.setattr(broker, "enqueue", broker_down)
        job = start_job(shopper, "catalog_export")
        assert outbox.sweep(older_than=0) == 0  # still down: nothing sent, nothing raised
    job = Job.objects.for_id(job.pk).get()
    assert (job.state, job.sent_at, job.error) == (Job.State.QUEUED, None, "")
    assert outbox.sweep(older_than=60) == 0  # too young: its own start may still send it
    assert outbox.sweep(older_than=0) == 1
    sent = [m for m in sent_messages if m.actor_name == run_job.actor_name]
    assert [m.args for m in sent] == [(str(job.pk),)]
    assert Job.objects.for_id(job.pk).get().sent_at is not None


@pytest.mark.django_db
def test_the_jobs_page_lists_only_the_users_own_jobs_with_live_progress_bars(shopper, make_user):
    mine = start_job(shopper, "catalog_export")
    theirs = start_job(make_user("other"), "catalog_export")
    client = Client()
    client.force_login(shopper)
    response = client.get("/jobs/")
    page = response.content.decode()
    assert f'data-job-id="{mine.pk}"' in page
    assert str(theirs.pk) not in page
    assert '<progress data-job-progress max="100" value="0">' in page
    assert "private" in response["Cache-Control"] and "no-store" in response["Cache-Control"]
    assert "Import products" not in page


@pytest.mark.django_db
def test_every_start_form_refuses_a_post_without_the_csrf_token(staff):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    for kind in [registered.name for registered in kinds.all_kinds()]:
        assert client.post(f"/jobs/start/{kind}/", {}).status_code == 403
    assert not all_jobs()
