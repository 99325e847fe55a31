"""The accounts' kind of job: the thumbnail made again from the stored picture."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from accounts import services as accounts_services
from accounts.models import Profile
from accounts.pictures import DecodersBusy, process_picture
from jobs.models import Job
from jobs.services import start_job
from jobs.tasks import MAX_RETRIES, retry_when
from jobs.tests.conftest import run
from notifications.models import Notification


def test_busy_picture_decoders_are_retried_a_few_times():
    # Declared transient by the kind's registration (accounts.jobs).
    error = DecodersBusy("all picture decode slots are busy")
    assert all(retry_when(retries, error) for retries in range(MAX_RETRIES))
    assert not retry_when(MAX_RETRIES, error)


@pytest.mark.django_db
def test_a_permanent_error_ends_the_job_failed_with_its_reason_on_its_page(shopper, client):
    job = start_job(shopper, "picture_thumbnail")  # the shopper has no picture
    run(job)
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.error == "Your profile has no picture to make a thumbnail from."
    assert Notification.objects.for_user(shopper.pk).get(job=job).body == job.error

    client.force_login(shopper)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "Your profile has no picture to make a thumbnail from." in page
    assert "data-job-state>failed<" in page


def picture_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.django_db
def test_a_thumbnail_job_makes_the_thumbnail_again_from_the_stored_picture(shopper):
    picture = process_picture(SimpleUploadedFile("me.png", picture_bytes()))
    accounts_services.update_profile(shopper, display_name="", bio="", picture=picture)
    old_thumbnail = Profile.objects.get(user=shopper).thumbnail.name
    job = start_job(shopper, "picture_thumbnail")
    run(job)
    job.refresh_from_db()
    profile = Profile.objects.get(user=shopper)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert profile.thumbnail.name == job.result["thumbnail"] != old_thumbnail
    assert profile.thumbnail.name.startswith("avatars/thumbnails/")
    with Image.open(profile.thumbnail.open()) as thumbnail:
        assert max(thumbnail.size) == 96
