"""Uploaded files in shared storage, never on a replica's disk (docs/STORAGE.md).

``default`` holds public, content-addressed files; ``private`` holds a user's files under
unguessable names (``private_name``), handed out only by ``private_file_response`` after
the caller checked the owner. Locally both live in PostgreSQL (``DatabaseStorage``).
"""

from __future__ import annotations

import secrets

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.http import FileResponse, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.deconstruct import deconstructible

from scaling.db.replicas import PRIMARY, primary_health
from scaling.models import StoredFile

PRIVATE_LOCATION = "private"
PRIVATE_CACHE_CONTROL = "private, no-store"
# Keys the public view never serves: the private storage's, and the job files that were
# stored under public, guessable names (``exports/<job id>.csv``) before it existed.
NOT_PUBLIC_PREFIXES = (f"{PRIVATE_LOCATION}/", "exports/", "job-inputs/")
MAX_NAME = StoredFile._meta.get_field("name").max_length


def read_stored_file(name: str) -> bytes | None:
    """The file's bytes, from a replica if it has them, else from the primary (unless it is
    unreachable: then what the replica has)."""
    sources = [StoredFile.objects, *([StoredFile.objects.using(PRIMARY)] if primary_health.is_up() else [])]
    for queryset in sources:
        content = queryset.filter(name=name).values_list("content", flat=True).first()
        if content is not None:
            return bytes(content)
    return None


def is_public_name(name: str) -> bool:
    """Whether ``/media/<name>`` may serve the key: not private, and a name a key can have
    (PostgreSQL text refuses NUL; keys fit the column; ``..`` and ``.`` are never saved)."""
    return (
        0 < len(name) <= MAX_NAME
        and not name.startswith(NOT_PUBLIC_PREFIXES)
        and not any(ord(character) < 32 for character in name)
        and not {".", ".."} & set(name.split("/"))
    )


def private_name(folder: str, suffix: str = "") -> str:
    """A name in the private storage that nobody can guess (256 random bits)."""
    return f"{folder}/{secrets.token_urlsafe(32)}{suffix}"


def private_storage() -> Storage:
    return storages["private"]


def private_file_response(name: str, filename: str, content_type: str) -> HttpResponse:
    """A private file as a download, for a caller that has checked who asks.

    The local storage streams it; object storage answers with a redirect to a signed
    URL that expires in minutes (``querystring_expire``). Neither answer may be kept by
    a shared cache, and the signed URL asks S3 to say the same of the file.
    """
    storage = private_storage()
    if isinstance(storage, DatabaseStorage):
        response = FileResponse(storage.open(name), as_attachment=True, filename=filename, content_type=content_type)
    else:
        parameters = {
            "ResponseContentDisposition": f'attachment; filename="{filename}"',
            "ResponseContentType": content_type,
            "ResponseCacheControl": PRIVATE_CACHE_CONTROL,
        }
        response = HttpResponseRedirect(storage.url(name, parameters=parameters))
    response["Cache-Control"] = PRIVATE_CACHE_CONTROL
    return response


@deconstructible
class DatabaseStorage(Storage):
    """Files in ``StoredFile``; with ``location``, under that folder (as S3Storage's option)."""

    def __init__(self, location: str = "") -> None:
        self.location = location.strip("/")

    def _key(self, name: str) -> str:
        return f"{self.location}/{name}" if self.location else name

    def _open(self, name: str, mode: str = "rb") -> ContentFile:
        content = read_stored_file(self._key(name))
        if content is None:
            raise FileNotFoundError(name)
        return ContentFile(content, name=name)

    def _save(self, name: str, content) -> str:
        content.seek(0)
        data = content.read()
        StoredFile.objects.update_or_create(name=self._key(name), defaults={"content": data, "size": len(data)})
        return name

    def exists(self, name: str) -> bool:
        # Asked before a save: the primary is the only copy that is never behind.
        return StoredFile.objects.using(PRIMARY).filter(name=self._key(name)).exists()

    def delete(self, name: str) -> None:
        StoredFile.objects.filter(name=self._key(name)).delete()

    def size(self, name: str) -> int:
        return StoredFile.objects.using(PRIMARY).values_list("size", flat=True).get(name=self._key(name))

    def url(self, name: str) -> str:
        if self.location:
            raise ValueError("A private file has no public URL: serve it with private_file_response.")
        return reverse("stored-file", args=[name])
