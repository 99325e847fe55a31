"""Deleting a user cascades to their reviews; this takes those reviews out of the summaries first.

A database cascade removes rows without ``catalog.services``, which would leave each
reviewed product's ``rating_count``/``rating_sum`` counting a review that no longer exists.
"""

from django.conf import settings
from django.db.models.signals import pre_delete
from django.dispatch import receiver

from catalog import services


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="catalog.withdraw_reviews_of_deleted_user")
def withdraw_reviews_of_deleted_user(sender, instance, **kwargs) -> None:
    services.delete_reviews_of_user(instance)
