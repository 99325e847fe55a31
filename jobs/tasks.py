"""The job runner: one Dramatiq actor for every kind of job, safe to deliver twice.

``run_job(job_id)`` carries only the id; the row is the truth. Guarantees:

- Idempotent. The row is locked and a finished job returns at once. The kind's effect
  (``jobs.handlers``), the final state and result, and the owner's completion
  notification commit in ONE transaction that re-locks the row and re-checks that the
  job is unfinished; a unique (job, kind) constraint on notifications is the last guard.
  So a redelivered message (RabbitMQ redelivers a dead worker's messages) never applies
  an effect twice, and the owner is told exactly once.
- Transient errors (a database, Redis or broker connection) are retried with exponential
  backoff, at most ``MAX_RETRIES`` times (``retry_when``). A job refused by its handler
  (``JobRefused``: a bad file, a missing picture) fails at once with the handler's reason.
  When Dramatiq gives up (retries spent, or an error that is not transient), it sends
  ``give_up_job``, which marks the job failed with a reason its owner can read.
- Progress is stored and pushed only when the whole percentage changes; every push
  follows a commit (``notifications.push``).
"""

from __future__ import annotations

import logging
import uuid

import dramatiq
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone
from django_redis import get_redis_connection
from django_redis.exceptions import ConnectionInterrupted
from dramatiq.errors import BrokerConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.handlers import HANDLERS, Apply, JobRefused
from jobs.models import Job
from jobs.progress import Progress, progress_event
from jobs.selectors import outcome_summary
from notifications import services as notifications
from notifications.models import Notification
from notifications.push import push_on_commit
from scaling import consistency

logger = logging.getLogger(__name__)

MAX_RETRIES = 5
MIN_BACKOFF_MS = 2_000
MAX_BACKOFF_MS = 120_000
TIME_LIMIT_MS = 30 * 60 * 1000

# Errors that say "not now", not "never": the same job may well succeed in a moment.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionInterrupted,
    BrokerConnectionError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exception: BaseException) -> bool:
    return isinstance(exception, TRANSIENT_ERRORS)


def retry_when(retries: int, exception: BaseException) -> bool:
    """Dramatiq's retry predicate for ``run_job``: ``retries`` is how many retries came before.

    Transient errors are retried until ``MAX_RETRIES`` retries have been made; anything
    else is not retried at all (doing it again would fail the same way).
    """
    return retries < MAX_RETRIES and is_transient(exception)


@dramatiq.actor(
    retry_when=retry_when,
    min_backoff=MIN_BACKOFF_MS,
    max_backoff=MAX_BACKOFF_MS,
    time_limit=TIME_LIMIT_MS,
    on_retry_exhausted="give_up_job",
)
def run_job(job_id: str) -> None:
    """Run the job ``job_id`` (a UUID string) to its end; a finished job is left alone."""
    job = _begin(job_id)
    if job is None:
        return
    try:
        apply = HANDLERS[job.kind](job, Progress(job))
        _succeed(job.pk, apply)
    except JobRefused as refusal:
        fail_job(job.pk, refusal.reason, refusal.result)


@dramatiq.actor(max_retries=10, min_backoff=5_000)
def give_up_job(message_data: dict, retry_info: dict) -> None:
    """Sent by Dramatiq's Retries when it stops retrying ``run_job``: the job fails, with a reason."""
    args = message_data.get("args") or [None]
    if retry_info.get("retries", 0) >= MAX_RETRIES:
        reason = (
            "The job kept meeting a temporary problem (a database, cache or queue connection) and was stopped "
            f"after {retry_info['retries'] + 1} attempts. Nothing was changed; please start it again later."
        )
    else:
        reason = "The job stopped on an unexpected error; the team can find the details in the logs."
    fail_job(args[0], reason)


def fail_job(job_id: str | uuid.UUID, reason: str, result: dict | None = None) -> bool:
    """Mark an unfinished job failed with ``reason`` and tell its owner; False if it had finished."""
    pk = _job_pk(job_id)
    if pk is None:
        return False
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=pk).first()
        if job is None or job.is_finished:
            return False
        job.state = Job.State.FAILED
        job.error = reason
        job.result = result or {}
        job.finished_at = timezone.now()
        job.save(update_fields=["state", "error", "result", "finished_at"])
        _announce(job)
    return True


def _job_pk(job_id: str | uuid.UUID | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(job_id))
    except ValueError:
        logger.error("a job message carries %r, which is not a job id", job_id)
        return None


def _begin(job_id: str) -> Job | None:
    """Lock the row and mark the job running; None if there is nothing to do."""
    pk = _job_pk(job_id)
    if pk is None:
        return None
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=pk).first()
        if job is None:
            logger.warning("job %s no longer exists", pk)
            return None
        if job.is_finished:
            return None
        job.state = Job.State.RUNNING
        job.attempts += 1
        job.started_at = job.started_at or timezone.now()
        job.save(update_fields=["state", "attempts", "started_at"])
        push_on_commit(job.owner_id, progress_event(job.pk, job.progress, job.state))
    return job


def _succeed(pk: uuid.UUID, apply: Apply) -> None:
    """Apply the effect, finish the job and notify its owner: one transaction, once."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=pk)
        if job.is_finished:
            return  # another delivery of the same message finished it first
        outcome = apply()
        job.state = Job.State.SUCCEEDED
        job.progress = 100
        job.result = outcome.result
        job.output_name = outcome.output_name or job.output_name
        job.error = ""
        job.finished_at = timezone.now()
        job.save(update_fields=["state", "progress", "result", "output_name", "error", "finished_at"])
        _announce(job)


def _announce(job: Job) -> None:
    """Inside the finishing transaction: the owner's notification, and the final progress push on commit."""
    # First on commit, before any push reaches the browser: the owner's next page must
    # show the finished job, not a replica's older copy (read-your-writes for jobs).
    consistency.written_for(job.owner_id)
    succeeded = job.state == Job.State.SUCCEEDED
    notifications.notify(
        job.owner_id,
        kind=Notification.Kind.JOB_FINISHED,
        title=f"{job.get_kind_display()} {'finished' if succeeded else 'failed'}",
        body=outcome_summary(job),
        link=job.get_absolute_url(),
        job=job,
    )
    push_on_commit(job.owner_id, progress_event(job.pk, job.progress, job.state))


@dramatiq.actor(max_retries=0)
def ping(token: str) -> None:
    """Does nothing but count itself: measures the broker and worker alone (bench/jobs.py)."""
    get_redis_connection("default").incr(f"herd:ping:{token}")
