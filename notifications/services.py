"""Writes of the notifications app. The stored row is the truth; pushes follow commits.

Every function here writes in the caller's transaction (or its own) and announces the
change to the user's open sockets only after commit (``notifications.push``), so a
socket never shows what a rollback took back, and a lost push loses nothing: the next
page load reads the rows.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from notifications import selectors
from notifications.models import Notification
from notifications.push import push
from scaling.consistency import use_primary


def _unread_count_now(user_id: int) -> int:
    # Right after our own commit: a replica may not have replayed it yet.
    with use_primary():
        return selectors.unread_count(user_id)


def _push_notification(notification: Notification) -> None:
    push(
        notification.user_id,
        {
            "type": "notification",
            "id": notification.pk,
            "title": notification.title,
            "body": notification.body,
            "link": notification.link,
            "unread": _unread_count_now(notification.user_id),
        },
    )


def _push_unread_count(user_id: int) -> None:
    push(user_id, {"type": "notification.read", "unread": _unread_count_now(user_id)})


@transaction.atomic(savepoint=False)  # part of the caller's transaction: it fails, all fails
def notify(
    user_id: int,
    *,
    title: str,
    body: str = "",
    link: str = "",
    kind: str = Notification.Kind.MESSAGE,
    job=None,
) -> Notification:
    """Store a notification for the user; it is pushed to their sockets once committed.

    ``link`` is a path on this site (``/jobs/<id>/``), so no link can lead elsewhere.
    At most one notification of each kind per job: a second one raises ``IntegrityError``
    (the last guard behind the job's own row lock).
    """
    if link and not (link.startswith("/") and not link.startswith("//")):
        raise ValueError(f"A notification links to a path on this site, not {link!r}.")
    notification = Notification.objects.create(
        user_id=user_id, kind=kind, title=title[:200], body=body, link=link, job=job
    )
    transaction.on_commit(lambda: _push_notification(notification))
    return notification


@transaction.atomic
def mark_read(user: AbstractBaseUser, notification_id: int) -> bool:
    """Mark one of the user's notifications read; False if they have no such notification."""
    changed = Notification.objects.filter(pk=notification_id, user_id=user.pk, read_at__isnull=True).update(
        read_at=timezone.now()
    )
    exists = changed or Notification.objects.filter(pk=notification_id, user_id=user.pk).exists()
    if changed:
        transaction.on_commit(lambda: _push_unread_count(user.pk))
    return bool(exists)


@transaction.atomic
def mark_all_read(user: AbstractBaseUser) -> int:
    """Mark every unread notification of the user read; returns how many changed."""
    changed = Notification.objects.filter(user_id=user.pk, read_at__isnull=True).update(read_at=timezone.now())
    if changed:
        transaction.on_commit(lambda: _push_unread_count(user.pk))
    return changed
