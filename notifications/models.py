"""Stored notifications: the truth about what a user was told.

The WebSocket push (``notifications.push``) is only the fast path: delivery over a
socket is at most once, so pages always read these rows.

Notifications are sharded by user (``scaling.sharding.shards``), on the same shard database as
the user's jobs, so a job's end and its notification commit together. ``user_id`` and
``product_id`` are plain columns: their rows live in the main database, and pages join
them by id in one batched query (``notifications.selectors``).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from scaling.sharding.shards import ShardedManager


class Notification(models.Model):
    class Kind(models.TextChoices):
        JOB_FINISHED = "job_finished", "Job finished"
        MESSAGE = "message", "Message"

    SHARD_KEY = "user_id"

    # Made by the shard database (herd_next_id): time, logical shard, sequence.
    id = models.BigIntegerField(primary_key=True, db_default=0, editable=False)
    user_id = models.BigIntegerField(help_text="The user's id (accounts.User, in the main database).")
    kind = models.CharField(max_length=32, choices=Kind.choices, default=Kind.MESSAGE)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    link = models.CharField(max_length=500, blank=True, help_text="A path on this site, such as /jobs/<id>/.")
    # The job is the same user's, so on the same shard database: a real foreign key.
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, null=True, blank=True, related_name="notifications")
    product_id = models.BigIntegerField(null=True, blank=True, help_text="A catalog product this is about.")
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ShardedManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The last guard of "exactly one completion notification per job", whatever
            # a redelivered message does.
            models.UniqueConstraint(
                fields=["job", "kind"], condition=Q(job__isnull=False), name="notifications_one_per_job_and_kind"
            ),
        ]
        indexes = [
            models.Index(fields=["user_id", "-created_at", "-id"], name="notifications_user_newest"),
            # The header's unread count on every page: a partial index holds only unread rows.
            models.Index(fields=["user_id"], condition=Q(read_at__isnull=True), name="notifications_user_unread"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_read(self) -> bool:
        return self.read_at is not None
