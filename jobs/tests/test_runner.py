"""The job runner: idempotent under redelivery, retries only what may pass, and always ends with a reason."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, InterfaceError, OperationalError
from django.test import Client
from django_redis import get_redis_connection
from dramatiq import get_broker
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware
from PIL import Image
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from accounts import services as accounts_services
from accounts.models import Profile
from accounts.pictures import DecodersBusy, process_picture
from catalog import cache as catalog_cache
from catalog import services as catalog_services
from catalog.models import Product
from jobs.handlers import JobRefused
from jobs.models import Job
from jobs.services import IdempotencyKeyReused, start_job
from jobs.tasks import MAX_RETRIES, give_up_job, retry_when, run_job
from jobs.tests.conftest import all_jobs, csv_bytes, run
from notifications.models import Notification
from scaling.sharding import shards
from scaling.web.storage import private_storage


@pytest.mark.django_db
def test_running_a_job_twice_applies_its_effect_once_and_notifies_once(staff):
    job = start_job(staff, Job.Kind.CATALOG_IMPORT, input_bytes=csv_bytes([("Lamp", "lamp", "lamps", "1", "1", "")]))
    run(job)
    first = Product.objects.get(slug="lamp").updated_at
    run(job)  # a redelivered message
    run_job.fn(str(job.pk))

    job.refresh_from_db()
    assert (job.state, job.attempts) == (Job.State.SUCCEEDED, 1)
    assert Product.objects.get(slug="lamp").updated_at == first
    assert Notification.objects.for_user(job.owner_id).filter(job=job).count() == 1


@pytest.mark.django_db
def test_a_second_completion_notification_for_one_job_is_refused_by_the_database(shopper):
    job = start_job(shopper, Job.Kind.CATALOG_EXPORT)
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
        DecodersBusy("all picture decode slots are busy"),
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
        Product.DoesNotExist(),
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
def test_a_permanent_error_ends_the_job_failed_with_its_reason_on_its_page(shopper, client):
    job = start_job(shopper, Job.Kind.PICTURE_THUMBNAIL)  # the shopper has no picture
    run(job)
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.error == "Your profile has no picture to make a thumbnail from."
    assert Notification.objects.for_user(shopper.pk).get(job=job).body == job.error

    client.force_login(shopper)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "Your profile has no picture to make a thumbnail from." in page
    assert "data-job-state>failed<" in page


@pytest.mark.django_db
def test_when_retries_run_out_the_job_fails_with_a_reason_and_one_notification(shopper):
    job = start_job(shopper, Job.Kind.CATALOG_EXPORT)
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
    job = start_job(shopper, Job.Kind.CATALOG_EXPORT)
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
    first = start_job(shopper, Job.Kind.CATALOG_EXPORT, idempotency_key="form-1")
    assert start_job(shopper, Job.Kind.CATALOG_EXPORT, idempotency_key="form-1") == first
    assert start_job(shopper, Job.Kind.CATALOG_EXPORT, idempotency_key="form-2") != first
    with pytest.raises(IdempotencyKeyReused):
        start_job(shopper, Job.Kind.PICTURE_THUMBNAIL, idempotency_key="form-1")
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
        job = start_job(staff, Job.Kind.CATALOG_IMPORT, input_bytes=b"name,slug,category,price,stock,description\n")
        assert [m for m in sent_messages if m.actor_name == run_job.actor_name] == []
    sent = [m for m in sent_messages if m.actor_name == run_job.actor_name]
    assert [(m.args, m.kwargs) for m in sent] == [((str(job.pk),), {})]
    assert private_storage().exists(Job.objects.for_id(job.pk).get().input_name)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_job_that_cannot_be_queued_fails_with_a_reason(shopper, monkeypatch):
    broker = get_broker()

    def broker_down(*args, **kwargs):
        raise ConnectionClosed(Exception("RabbitMQ is down"))

    monkeypatch.setattr(broker, "enqueue", broker_down)
    job = start_job(shopper, Job.Kind.CATALOG_EXPORT)
    job = Job.objects.for_id(job.pk).get()
    assert job.state == Job.State.FAILED
    assert job.error == "The job could not be queued (the job queue is unavailable). Please start it again."


def picture_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.django_db
def test_a_thumbnail_job_makes_the_thumbnail_again_from_the_stored_picture(shopper):
    picture = process_picture(SimpleUploadedFile("me.png", picture_bytes()))
    accounts_services.update_profile(shopper, display_name="", bio="", picture=picture)
    old_thumbnail = Profile.objects.get(user=shopper).thumbnail.name
    job = start_job(shopper, Job.Kind.PICTURE_THUMBNAIL)
    run(job)
    job.refresh_from_db()
    profile = Profile.objects.get(user=shopper)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert profile.thumbnail.name == job.result["thumbnail"] != old_thumbnail
    assert profile.thumbnail.name.startswith("avatars/thumbnails/")
    with Image.open(profile.thumbnail.open()) as thumbnail:
        assert max(thumbnail.size) == 96


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


@pytest.mark.django_db
def test_the_jobs_page_lists_only_the_users_own_jobs_with_live_progress_bars(shopper, make_user):
    mine = start_job(shopper, Job.Kind.CATALOG_EXPORT)
    theirs = start_job(make_user("other"), Job.Kind.CATALOG_EXPORT)
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
    for kind in Job.Kind.values:
        assert client.post(f"/jobs/start/{kind}/", {}).status_code == 403
    assert not all_jobs()
