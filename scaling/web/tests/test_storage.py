"""Shared file storage: /media/ serves public files only, and never answers an odd name with a 500."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from scaling.models import StoredFile
from scaling.web.storage import private_name, private_storage

pytestmark = pytest.mark.django_db

IMMUTABLE = "public, max-age=31536000, immutable"


def test_a_picture_is_served_public_and_immutable(client):
    name = default_storage.save("avatars/abc123.webp", ContentFile(b"RIFF-picture"))
    response = client.get(f"/media/{name}")
    assert response.status_code == 200
    assert response.content == b"RIFF-picture"
    assert response["Cache-Control"] == IMMUTABLE


def test_the_private_storage_keeps_its_files_under_private_and_media_refuses_them(client):
    name = private_storage().save(private_name("exports", ".csv"), ContentFile(b"name,slug\r\n"))
    assert StoredFile.objects.filter(name=f"private/{name}").exists()
    assert private_storage().open(name).read() == b"name,slug\r\n"
    for path in (f"/media/private/{name}", f"/media/{name}"):
        response = client.get(path)
        assert response.status_code == 404
        assert "immutable" not in response.get("Cache-Control", "")
    # Not even the name-only 304 answers for a private name.
    etag = f'"private/{name}"'
    assert client.get(f"/media/private/{name}", HTTP_IF_NONE_MATCH=etag).status_code == 404


def test_a_private_file_has_no_public_url():
    with pytest.raises(ValueError):
        private_storage().url("exports/x.csv")


@pytest.mark.parametrize("legacy", ["exports/7.csv", "job-inputs/7.csv"])
def test_job_files_stored_under_their_old_guessable_names_are_no_longer_served(client, legacy):
    StoredFile.objects.create(name=legacy, content=b"secret,rows\r\n", size=13)
    assert client.get(f"/media/{legacy}").status_code == 404


def test_private_names_are_random_not_counted():
    names = {private_name("exports", ".csv") for _ in range(100)}
    assert len(names) == 100
    assert all(name.startswith("exports/") and name.endswith(".csv") and len(name) == 8 + 43 + 4 for name in names)


ODD_NAMES = {
    "NUL": "a%00b",
    "NUL in a folder": "avatars/%00.webp",
    "a control character": "a%0Ab",
    "longer than any stored name": "a" * 256,
    "very long": "a/" * 5000,
    "dot dot": "avatars/../private/exports/x.csv",
    "encoded dot dot": "avatars/%2e%2e/private/x.csv",
    "dot": "./avatars/x.webp",
    "not ASCII": "%E2%98%83.webp",
}


@pytest.mark.parametrize("path", ODD_NAMES.values(), ids=ODD_NAMES.keys())
def test_an_odd_name_is_a_404_never_a_500(client, path):
    assert client.get(f"/media/{path}").status_code == 404
    assert client.get(f"/media/{path}", HTTP_IF_NONE_MATCH='"x"').status_code == 404
