"""The job runner: one Dramatiq actor for every registered kind, safe to deliver twice
(the flow: docs/ARCHITECTURE.md; why it spans two databases safely: docs/SHARDING.md).

- ``run_job(job_id)``: the kind's effect (its handler's idempotent ``apply``) commits on
  the main database, then the job's end and its owner's one notification commit together
  on the owner's shard, only if the job is still unfinished: a redelivery changes nothing
  more and tells no one again.
- Transient errors (connections, and those a kind declares) are retried with backoff,
  ``MAX_RETRIES`` times at most; ``JobRefused``, a staff-only kind whose owner is no longer
  staff, any other error or spent retries end the job ``failed`` with a reason its owner sees.
"""

from __future__ import annotations

import logging
import time

import dramatiq
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone
from django_redis import get_redis_connection
from django_redis.exceptions import ConnectionInterrupted
from dramatiq.errors import BrokerConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs import kinds
from jobs.kinds import Apply, JobRefused
from jobs.models import Job
from jobs.progress import Progress, progress_event
from jobs.selectors import outcome_summary
from notifications import services as notifications
from notifications.models import Notification
from notifications.push import push_on_commit
from scaling.db import consistency
from scaling.db.replicas import PRIMARY
from scaling.sharding import shards

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
    shards.ShardMoved,
)


def is_transient(exception: BaseException) -> bool:
    """One of ``TRANSIENT_ERRORS``, or of the errors a registered kind declares transient."""
    return isinstance(exception, TRANSIENT_ERRORS + kinds.transient_errors())


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
    """Run the job ``job_id`` (its id as a string) to its end; a finished job is left alone."""
    job = _begin(job_id)
    if job is None:
        return
    try:
        kind = kinds.get(job.kind)
        if kind.staff_only:
            _require_staff(job, kind)
        apply = kind.handler(job, Progress(job))
        _succeed(job, apply)
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


def fail_job(job_id: str | int, reason: str, result: dict | None = None) -> bool:
    """Mark an unfinished job failed with ``reason`` and tell its owner; False if it had finished."""
    pk = _job_pk(job_id)
    if pk is None:
        return False
    with shards.writing(shards.shard_of_id(pk)) as alias:
        job = Job.objects.using(alias).select_for_update().filter(pk=pk).first()
        if job is None or job.is_finished:
            return False
        job.state = Job.State.FAILED
        job.error = reason
        job.result = result or {}
        job.finished_at = timezone.now()
        job.save(update_fields=["state", "error", "result", "finished_at"])
        _announce(job, alias)
    return True


def _require_staff(job: Job, kind: kinds.Kind) -> None:
    # Checked again when the job runs: the owner may have lost the right since starting it.
    # The owner lives in the main database: an application-side join by id.
    if not get_user_model().objects.filter(pk=job.owner_id, is_staff=True).exists():
        raise JobRefused(f"Only staff can run a {kind.label.lower()}.")


def _job_pk(job_id: str | int | None) -> int | None:
    try:
        pk = int(str(job_id))
    except ValueError:
        pk = -1
    if not 0 < pk < 1 << 63:
        logger.error("a job message carries %r, which is not a job id", job_id)
        return None
    return pk


def _begin(job_id: str) -> Job | None:
    """Lock the row and mark the job running; None if there is nothing to do."""
    pk = _job_pk(job_id)
    if pk is None:
        return None
    with shards.writing(shards.shard_of_id(pk)) as alias:
        job = Job.objects.using(alias).select_for_update().filter(pk=pk).first()
        if job is None:
            logger.warning("job %s no longer exists", pk)
            return None
        if job.is_finished:
            return None
        job.state = Job.State.RUNNING
        job.attempts += 1
        job.started_at = job.started_at or timezone.now()
        job.save(update_fields=["state", "attempts", "started_at"])
        push_on_commit(job.owner_id, progress_event(job.pk, job.progress, job.state), using=alias)
    return job


def _succeed(running: Job, apply: Apply) -> None:
    """Apply the effect (main database), then finish the job and notify its owner (their shard), once."""
    with transaction.atomic(using=PRIMARY):
        outcome = apply()
    # The owner's next page must show the effect, not a replica's older copy
    # (read-your-writes for jobs): stored before the job ends and any push goes out.
    consistency.written_for(running.owner_id)
    _hold_after_effect(running.pk)
    with shards.writing(shards.shard_of_id(running.pk)) as alias:
        job = Job.objects.using(alias).select_for_update().get(pk=running.pk)
        if job.is_finished:
            return  # another delivery of the same message finished it first
        job.state = Job.State.SUCCEEDED
        job.progress = 100
        job.result = outcome.result
        job.output_name = outcome.output_name or job.output_name
        job.error = ""
        job.finished_at = timezone.now()
        job.save(update_fields=["state", "progress", "result", "output_name", "error", "finished_at"])
        _announce(job, alias)


def _announce(job: Job, alias: str) -> None:
    """Inside the finishing transaction (on ``alias``, the owner's shard): the final
    progress push on commit, and the owner's notification. The push is registered first:
    on commit it goes out before the notification's, which reads the unread count first."""
    push_on_commit(job.owner_id, progress_event(job.pk, job.progress, job.state), using=alias)
    succeeded = job.state == Job.State.SUCCEEDED
    notifications.notify(
        job.owner_id,
        kind=Notification.Kind.JOB_FINISHED,
        title=f"{job.kind_label} {'finished' if succeeded else 'failed'}",
        body=outcome_summary(job),
        link=job.get_absolute_url(),
        job=job,
    )


# --- FAULT INJECTION POINT, for tests only ------------------------------------------
# With HERD_FAULT_HOLD_AFTER_EFFECT_SECONDS set (never in production), the first delivery
# of a job waits between the effect's commit and the end's while its Redis key says
# "held", so a test can SIGKILL the worker in that gap, or let a second delivery finish
# the job meanwhile (jobs/tests/test_exactly_once.py, deploy/tests/test_live_jobs.py).
HELD, RELEASED = b"held", b"released"


def hold_after_effect_key(job_id: int | str) -> str:
    return f"herd:fault:hold-after-effect:{int(job_id)}"


def _hold_after_effect(job_id: int) -> None:
    seconds = settings.HERD_FAULT_HOLD_AFTER_EFFECT_SECONDS
    if not seconds:
        return
    redis = get_redis_connection("default")
    key = hold_after_effect_key(job_id)
    if not redis.set(key, HELD, nx=True, ex=3600):
        return  # a later delivery of the same job goes straight on
    deadline = time.monotonic() + seconds
    while redis.get(key) == HELD and time.monotonic() < deadline:
        time.sleep(0.05)


@dramatiq.actor(max_retries=0)
def ping(token: str) -> None:
    """Does nothing but count itself: measures the broker and worker alone (bench/jobs.py)."""
    key = f"herd:ping:{token}"
    get_redis_connection("default").pipeline(transaction=False).incr(key).expire(key, 3600).execute()
