"""Writes of the notifications app. The stored row is the truth; pushes follow commits.

Every function here writes on the user's shard database, inside
``scaling.sharding.shards.writing`` (in the caller's transaction there, or its own), and
announces the change to the user's open sockets only after commit
(``notifications.push``), so a socket never shows what a rollback took back, and a lost
push loses nothing: the next page load reads the rows.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from notifications import selectors
from notifications.models import Notification
from notifications.push import push
from scaling.sharding import shards


def _unread_count_now(user_id: int) -> int:
    # Read on the user's shard database itself: it has our commit.
    return selectors.unread_count(user_id)


def _push_notification(notification: Notification) -> None:
    push(
        notification.user_id,
        {
            "type": "notification",
            "id": str(notification.pk),  # 64 bits: more than a JavaScript number holds exactly
            "title": notification.title,
            "body": notification.body,
            "link": notification.link,
            "unread": _unread_count_now(notification.user_id),
        },
    )


def _push_unread_count(user_id: int) -> None:
    push(user_id, {"type": "notification.read", "unread": _unread_count_now(user_id)})


def notify(
    user_id: int,
    *,
    title: str,
    body: str = "",
    link: str = "",
    kind: str = Notification.Kind.MESSAGE,
    job=None,
    product_id: int | None = None,
) -> Notification:
    """Store a notification for the user; it is pushed to their sockets once committed.

    Inside the caller's ``writing`` block on the same shard (a job's end), it is part of
    that transaction: it fails, all fails.

    ``link`` is a path on this site (``/jobs/<id>/``), so no link can lead elsewhere.
    At most one notification of each kind per job: a second one raises ``IntegrityError``
    (the last guard behind the job's own row lock).
    """
    if link and not (link.startswith("/") and not link.startswith("//")):
        raise ValueError(f"A notification links to a path on this site, not {link!r}.")
    with shards.writing_for_user(user_id, savepoint=False) as alias:
        notification = Notification.objects.using(alias).create(
            user_id=user_id, kind=kind, title=title[:200], body=body, link=link, job=job, product_id=product_id
        )
        transaction.on_commit(lambda: _push_notification(notification), using=alias)
    return notification


def mark_read(user: AbstractBaseUser, notification_id: int) -> bool:
    """Mark one of the user's notifications read; False if they have no such notification."""
    with shards.writing_for_user(user.pk) as alias:
        mine = Notification.objects.using(alias).filter(pk=notification_id, user_id=user.pk)
        changed = mine.filter(read_at__isnull=True).update(read_at=timezone.now())
        exists = changed or mine.exists()
        if changed:
            transaction.on_commit(lambda: _push_unread_count(user.pk), using=alias)
    return bool(exists)


def mark_all_read(user: AbstractBaseUser) -> int:
    """Mark every unread notification of the user read; returns how many changed."""
    with shards.writing_for_user(user.pk) as alias:
        changed = (
            Notification.objects.using(alias)
            .filter(user_id=user.pk, read_at__isnull=True)
            .update(read_at=timezone.now())
        )
        if changed:
            transaction.on_commit(lambda: _push_unread_count(user.pk), using=alias)
    return changed
