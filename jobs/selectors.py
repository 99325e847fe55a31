"""Reads of the jobs app. A user only ever sees their own jobs, read from their shard;
staff see counts of all, summed over the shards (an explicit fan-out)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count

from jobs import kinds
from jobs.models import Job
from scaling.sharding import shards

PAGE_SIZE = 50


def jobs_of(user: AbstractBaseUser, limit: int = PAGE_SIZE) -> list[Job]:
    """The user's newest jobs, newest first."""
    return list(Job.objects.for_user(user.pk).order_by("-created_at")[:limit])


def job_of(user: AbstractBaseUser, job_id: int) -> Job:
    """The user's job with this id; raises ``Job.DoesNotExist`` for anyone else's, as for none.

    Ids are not secret (they carry a time and a shard): the owner check is the access check.
    """
    return Job.objects.for_user(user.pk).get(pk=job_id)


def unfinished_job_counts() -> dict[str, int]:
    """How many jobs of all users are queued and running (the operations dashboard)."""
    counts = dict.fromkeys((Job.State.QUEUED, Job.State.RUNNING), 0)
    per_shard = shards.fan_out(
        lambda alias: list(
            Job.objects.using(alias)
            .filter(state__in=list(counts))
            .values_list("state")
            .annotate(n=Count("pk"))
            .order_by()
        )
    )
    for rows in per_shard.values():
        for state, number in rows:
            counts[state] += number
    return {str(state): number for state, number in counts.items()}


def outcome_summary(job: Job) -> str:
    """One sentence on how a finished job ended, for its owner."""
    if job.state == Job.State.FAILED:
        return job.error
    kind = kinds.find(job.kind)
    return kind.summary(job.result) if kind else ""
