"""Uploaded files in shared storage: never on a replica's disk.

Production stores them in S3-compatible object storage (django-storages, configured
from the environment: ``config/settings.py``). The local herd and the tests store them
in PostgreSQL through ``DatabaseStorage``: a service every replica already reaches,
durable across restarts, and transactional, so a file and the row that names it are
written together or not at all. docs/STORAGE.md says why this and not a local S3 clone.

Names are content-addressed by the code that saves them (``accounts.services``), so a
stored file never changes: any copy is a correct copy, which is why reads may come
from a replica and fall back to the primary when the replica has not replayed the
file yet.
"""

from __future__ import annotations

from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from django.urls import reverse
from django.utils.deconstruct import deconstructible

from scaling.models import StoredFile
from scaling.replicas import PRIMARY


def read_stored_file(name: str) -> bytes | None:
    """The file's bytes, from a replica if it has them, else from the primary."""
    for queryset in (StoredFile.objects, StoredFile.objects.using(PRIMARY)):
        content = queryset.filter(name=name).values_list("content", flat=True).first()
        if content is not None:
            return bytes(content)
    return None


@deconstructible
class DatabaseStorage(Storage):
    def _open(self, name: str, mode: str = "rb") -> ContentFile:
        content = read_stored_file(name)
        if content is None:
            raise FileNotFoundError(name)
        return ContentFile(content, name=name)

    def _save(self, name: str, content) -> str:
        content.seek(0)
        data = content.read()
        StoredFile.objects.update_or_create(name=name, defaults={"content": data, "size": len(data)})
        return name

    def exists(self, name: str) -> bool:
        # Asked before a save: the primary is the only copy that is never behind.
        return StoredFile.objects.using(PRIMARY).filter(name=name).exists()

    def delete(self, name: str) -> None:
        StoredFile.objects.filter(name=name).delete()

    def size(self, name: str) -> int:
        return StoredFile.objects.using(PRIMARY).values_list("size", flat=True).get(name=name)

    def url(self, name: str) -> str:
        return reverse("stored-file", args=[name])
