"""Reads of the jobs app. A user only ever sees their own jobs."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser

from jobs.models import Job

PAGE_SIZE = 50


def jobs_of(user: AbstractBaseUser, limit: int = PAGE_SIZE) -> list[Job]:
    """The user's newest jobs, newest first."""
    return list(Job.objects.filter(owner_id=user.pk).order_by("-created_at")[:limit])


def job_of(user: AbstractBaseUser, job_id: uuid.UUID) -> Job:
    """The user's job with this id; raises ``Job.DoesNotExist`` for anyone else's, as for none."""
    return Job.objects.get(pk=job_id, owner_id=user.pk)


def outcome_summary(job: Job) -> str:
    """One sentence on how a finished job ended, for its owner."""
    if job.state == Job.State.FAILED:
        return job.error
    result = job.result
    match job.kind:
        case Job.Kind.CATALOG_IMPORT:
            return (
                f"{result.get('rows', 0)} products imported: {result.get('created', 0)} new, "
                f"{result.get('updated', 0)} updated."
            )
        case Job.Kind.CATALOG_EXPORT:
            return f"{result.get('products', 0)} products exported; download the file from the job's page."
        case Job.Kind.PICTURE_THUMBNAIL:
            return "Your thumbnail was made again from your picture."
        case Job.Kind.CACHE_WARM:
            return f"Warmed {result.get('product_pages', 0)} product pages and {result.get('list_pages', 0)} lists."
    return ""
