from django.contrib.auth.models import AbstractUser
from django.db import models

from scaling.db.bulk_updates import SignallingQuerySet


class User(AbstractUser):
    """Herd's user. Custom from the first migration, so fields can be added later."""


class Profile(models.Model):
    """What a user shows of themselves. Pictures live in shared storage, by content hash."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="profile")
    display_name = models.CharField(max_length=80, blank=True)
    bio = models.TextField(max_length=2000, blank=True)
    picture = models.FileField(blank=True, max_length=255)
    thumbnail = models.FileField(blank=True, max_length=255)
    updated_at = models.DateTimeField(auto_now=True)

    # Bulk updates tell the caches of the pages that show a display name (catalog.cache).
    objects = SignallingQuerySet.as_manager()

    def __str__(self) -> str:
        return self.display_name or self.user.get_username()
