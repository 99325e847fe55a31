"""Stored notifications: the truth about what a user was told.

The WebSocket push (``notifications.push``) is only the fast path: delivery over a
socket is at most once, so pages always read these rows.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Notification(models.Model):
    class Kind(models.TextChoices):
        JOB_FINISHED = "job_finished", "Job finished"
        MESSAGE = "message", "Message"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=32, choices=Kind.choices, default=Kind.MESSAGE)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    link = models.CharField(max_length=500, blank=True, help_text="A path on this site, such as /jobs/<id>/.")
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, null=True, blank=True, related_name="notifications")
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

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
            models.Index(fields=["user", "-created_at", "-id"], name="notifications_user_newest"),
            # The header's unread count on every page: a partial index holds only unread rows.
            models.Index(fields=["user"], condition=Q(read_at__isnull=True), name="notifications_user_unread"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_read(self) -> bool:
        return self.read_at is not None
