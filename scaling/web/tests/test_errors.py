"""Bad input gets a clear 4xx, never a 500: bodies that cannot be parsed, ids that name no shard."""

import pytest
from django.test import Client

from accounts.models import User
from jobs.models import Job
from notifications.models import Notification
from scaling.sharding import shards

pytestmark = pytest.mark.django_db(databases="__all__")


def test_a_form_declaring_utf16_is_a_400_and_the_error_page_does_not_check_csrf_again():
    browser = Client(enforce_csrf_checks=True)
    browser.get("/accounts/login/")
    token = browser.cookies["csrftoken"].value
    body = f"csrfmiddlewaretoken={token}&username=someone&password=guess".encode()
    for path, status in (("/accounts/login/", 400), ("/no/such/page/", 404)):
        response = browser.generic("POST", path, body, content_type="application/x-www-form-urlencoded; charset=utf-16")
        assert response.status_code == status


@pytest.mark.parametrize("model", [Job, Notification])
def test_admin_pages_of_ids_that_name_no_logical_shard_are_404(client, model):
    staff = User.objects.create_superuser("boss", "boss@example.com", "x-long-password-42")
    client.force_login(staff)
    outside_the_map = (shards.LOGICAL_SHARDS << shards.SEQUENCE_BITS) + 1
    base = f"/admin/{model._meta.app_label}/{model._meta.model_name}"
    for object_id in ("-1", "0", str(outside_the_map), str(2**63), str(2**70), "abc"):
        assert client.get(f"{base}/{object_id}/change/").status_code == 404, object_id
    assert client.get(f"{base}/{2**20}/change/").status_code == 404  # a valid id with no row
