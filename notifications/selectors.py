"""Reads of the notifications app."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

from notifications.models import Notification

PAGE_SIZE = 50


def unread_count(user_id: int) -> int:
    """How many of the user's notifications are unread: one COUNT on a partial index."""
    return Notification.objects.filter(user_id=user_id, read_at__isnull=True).count()


def notifications_of(user: AbstractBaseUser, limit: int = PAGE_SIZE) -> list[Notification]:
    """The user's newest notifications, newest first."""
    return list(Notification.objects.filter(user_id=user.pk).order_by("-created_at", "-id")[:limit])
