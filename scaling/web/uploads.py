"""Uploads stay in memory, bounded: never a temporary file on a replica's disk.

Django's default handlers spool an upload larger than 2.5 MB to a temporary file.
``BoundedMemoryUploadHandler`` keeps every upload in memory instead, but at most
``HERD_UPLOAD_MAX_BYTES + 1`` bytes of it: the rest is read and dropped, and the
file's ``size`` still reports the true length, so a form can say "the file is 20 MB;
the limit is 5 MB" without the replica holding 20 MB.
"""

from __future__ import annotations

from io import BytesIO

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler


class BoundedMemoryUploadHandler(FileUploadHandler):
    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.file = BytesIO()
        self.received = 0
        self.limit = settings.HERD_UPLOAD_MAX_BYTES + 1

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        room = self.limit - self.received
        if room > 0:
            self.file.write(raw_data[:room])
        self.received += len(raw_data)
        return None

    def file_complete(self, file_size: int) -> InMemoryUploadedFile:
        self.file.seek(0)
        return InMemoryUploadedFile(
            file=self.file,
            field_name=self.field_name,
            name=self.file_name,
            content_type=self.content_type,
            size=self.received,
            charset=self.charset,
            content_type_extra=self.content_type_extra,
        )
