"""Writes of the jobs app: starting a job.

Guarantees of :func:`start_job`:

- The job row is written in one transaction on its owner's shard database
  (``scaling.sharding.shards.writing``), and ONE Dramatiq message carrying only the job's id is
  sent after it commits (``jobs.outbox.send``, which marks the row sent): the worker
  never looks for a row that is not there. An input file is stored (shared storage,
  under a name containing the job's id) before that commit: a failure leaves at most a
  file no job names, never a job without its file.
- With an ``idempotency_key``, starting the same thing twice (a double click, a form
  sent again) returns the job the first call made, and sends nothing more.
- Only a registered kind starts (``jobs.kinds``); staff-only kinds are refused to
  other users here, whatever the view did.
- With ``limited=True`` (a user's request), a start beyond the owner's unfinished jobs
  or hourly starts (settings) raises ``scaling.web.throttle.RateLimited``, a 429.
- If the message cannot be sent (the broker is down), the job stays ``queued`` and
  unsent; the outbox sweep sends it once the broker is back (``jobs.outbox``).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.db import IntegrityError, connections, transaction

from jobs import kinds, outbox
from jobs.models import Job
from scaling.sharding import shards
from scaling.web import throttle
from scaling.web.storage import private_name, private_storage

logger = logging.getLogger(__name__)


class IdempotencyKeyReused(ValueError):
    """The key already started a job of another kind."""


def _existing(owner: AbstractBaseUser, kind: str, idempotency_key: str) -> Job | None:
    # Read where the owner's writes are seen (a shard replica only once it replayed them):
    # the first call's row is there.
    job = Job.objects.for_user(owner.pk).filter(idempotency_key=idempotency_key).first()
    if job is not None and job.kind != kind:
        raise IdempotencyKeyReused(f"The key {idempotency_key!r} already started a {job.kind_label}.")
    return job


def start_job(
    owner: AbstractBaseUser,
    kind: str,
    *,
    params: dict | None = None,
    input_bytes: bytes | None = None,
    idempotency_key: str | None = None,
    limited: bool = False,
) -> Job:
    """Create a job for ``owner`` and enqueue it once committed; see the module's guarantees."""
    registered = kinds.find(kind)
    if registered is None:
        names = ", ".join(known.name for known in kinds.all_kinds())
        raise ValueError(f"Unknown kind of job {kind!r}; expected one of {names}.")
    if registered.staff_only and not owner.is_staff:
        raise PermissionDenied(f"Only staff can start a {registered.label.lower()}.")
    if idempotency_key:
        existing = _existing(owner, kind, idempotency_key)
        if existing is not None:
            return existing
    try:
        with shards.writing_for_user(owner.pk) as alias:
            if limited:
                _refuse_beyond_limits(owner, alias)
            job = Job.objects.using(alias).create(
                owner_id=owner.pk, kind=kind, params=params or {}, idempotency_key=idempotency_key or ""
            )
            if input_bytes is not None:
                name = private_name("job-inputs", registered.input_suffix)
                job.input_name = private_storage().save(name, ContentFile(input_bytes))
                job.save(update_fields=["input_name"])
            transaction.on_commit(lambda: outbox.send(job.pk), using=alias)
    except IntegrityError:
        # A concurrent call with the same key won the race to the unique constraint.
        if idempotency_key and (existing := _existing(owner, kind, idempotency_key)) is not None:
            return existing
        raise
    return job


def _refuse_beyond_limits(owner: AbstractBaseUser, alias: str) -> None:
    with connections[alias].cursor() as cursor:
        # One start at a time per user, so two concurrent starts cannot both see room for one more.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"herd:job-start:{owner.pk}"])
    unfinished = Job.objects.for_user(owner.pk).using(alias).exclude(state__in=Job.FINISHED).count()
    if unfinished >= settings.HERD_UNFINISHED_JOBS_PER_USER:
        raise throttle.RateLimited(60, "You have as many unfinished jobs as you may; wait for one to finish.")
    hourly = settings.HERD_JOB_STARTS_PER_USER_PER_HOUR
    throttle.RateLimit("job-starts", hourly, 3600, "You started as many jobs this hour as you may.").hit(str(owner.pk))
