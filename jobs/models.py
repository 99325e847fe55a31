"""A background job: what was asked, how far it got, and how it ended.

The row is the truth about a job; the Dramatiq message only carries its id
(``jobs.tasks``). Input and output files live in the default storage (shared:
PostgreSQL locally, S3 in production), under names that contain the job id. What a
kind does is registered by the app that owns it (``jobs.kinds``).

Jobs are sharded by owner (``scaling.sharding.shards``): the row lives in its owner's shard
database, its id is made there and names that shard, and ``owner_id`` is a plain
column (the user lives in the main database: no cross-database foreign key).
``sent_at`` says whether its message reached the broker (the outbox, ``jobs.outbox``).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.urls import reverse

from jobs import kinds
from scaling.sharding.shards import ShardedManager


class Job(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    FINISHED = (State.SUCCEEDED, State.FAILED)

    SHARD_KEY = "owner_id"

    # Made by the shard database (herd_next_id: time, logical shard, sequence). Ids in
    # URLs can be guessed: every view checks the owner (jobs.selectors.job_of).
    id = models.BigIntegerField(primary_key=True, db_default=0, editable=False)
    owner_id = models.BigIntegerField(help_text="The user's id (accounts.User, in the main database).")
    # A name registered by the app that owns the kind (jobs.kinds).
    kind = models.CharField(max_length=32)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, help_text="Why the job failed, in words its owner understands.")
    idempotency_key = models.CharField(max_length=100, blank=True)
    input_name = models.CharField(max_length=255, blank=True)
    output_name = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Null until the broker confirmed its run_job message; the outbox sweep sends those (jobs.outbox).
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ShardedManager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner_id", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="jobs_job_one_per_owner_and_idempotency_key",
            ),
            models.CheckConstraint(condition=Q(progress__lte=100), name="jobs_job_progress_at_most_100"),
        ]
        indexes = [
            models.Index(fields=["owner_id", "-created_at"], name="jobs_job_owner_newest"),
            # The outbox sweep's query: small, it holds only the jobs not sent yet.
            models.Index(
                fields=["created_at"], condition=Q(state="queued", sent_at__isnull=True), name="jobs_job_unsent"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind_label} {self.id}"

    def get_absolute_url(self) -> str:
        return reverse("jobs:detail", args=[self.id])

    @property
    def kind_label(self) -> str:
        return kinds.label_of(self.kind)

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED
