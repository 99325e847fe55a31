from django.db import models


class StoredFile(models.Model):
    """One file in the shared database storage (``scaling.web.storage.DatabaseStorage``)."""

    name = models.CharField(max_length=255, primary_key=True)
    content = models.BinaryField()
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name
