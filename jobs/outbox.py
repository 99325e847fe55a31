"""The jobs outbox: a committed job reaches the broker even if the broker was down when it started.

- A job's row is the truth: ``Job.sent_at`` is null until the publish of its ``run_job``
  message went to the broker's connection without error. :func:`send` publishes and stamps it;
  ``start_job`` calls it once the row commits. If the broker is down the job stays ``queued``.
- :func:`sweep` re-sends every ``queued`` job still unsent ``HERD_OUTBOX_SWEEP_SECONDS``
  after it was made, on every shard database, each under a transaction-level advisory
  lock there so two sweepers do not send the same jobs at once. A broker still down
  leaves them unsent and raises nothing. A job sent twice anyway (a publish made
  but not stamped, a sweep racing ``start_job``) is harmless: ``run_job`` is idempotent.
- :class:`OutboxSweeper`, a Dramatiq middleware, sweeps every ``HERD_OUTBOX_SWEEP_SECONDS``
  in a thread of each worker process (``after_worker_boot``); web processes never sweep.
  (Loaded with the broker, before the apps: models are imported inside the functions.)
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections, transaction
from django.utils import timezone
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)

LOCK = "herd:jobs-outbox"
BATCH = 100


def send(job_id: int) -> bool:
    """Publish ``run_job(job_id)`` and mark the job sent; False (logged) if the broker refused."""
    from jobs.models import Job
    from jobs.tasks import run_job
    from scaling.sharding import shards

    try:
        run_job.send(str(job_id))
    except Exception:
        logger.warning("could not send job %s; the outbox sweep will try again", job_id, exc_info=True)
        return False
    with shards.writing(shards.shard_of_id(job_id)) as alias:
        Job.objects.using(alias).filter(pk=job_id, sent_at__isnull=True).update(sent_at=timezone.now())
    return True


def sweep(older_than: float | None = None) -> int:
    """Send the unsent queued jobs made over ``older_than`` seconds ago (the setting by
    default), on every shard; how many were sent. Never raises for a broker or a shard that is down."""
    from scaling.sharding import shards

    age = settings.HERD_OUTBOX_SWEEP_SECONDS if older_than is None else older_than
    before = timezone.now() - timedelta(seconds=age)
    sent = 0
    for alias in shards.shard_aliases():
        try:
            sent += _sweep_shard(alias, before)
        except DatabaseError:
            logger.warning("the outbox sweep could not read %s", alias, exc_info=True)
    return sent


def _sweep_shard(alias: str, before) -> int:
    from jobs.models import Job

    with transaction.atomic(using=alias):
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [LOCK])
            if not cursor.fetchone()[0]:
                return 0  # another sweeper is on this database now
        unsent = list(
            Job.objects.using(alias)
            .filter(state=Job.State.QUEUED, sent_at__isnull=True, created_at__lt=before)
            .order_by("created_at")
            .values_list("pk", flat=True)[:BATCH]
        )
        sent = 0
        for job_id in unsent:
            if not send(job_id):
                break  # the broker is still down: the next sweep tries again
            sent += 1
    if sent:
        logger.info("the outbox sweep sent %d job(s) from %s", sent, alias)
    return sent


class OutboxSweeper(Middleware):
    """Runs :func:`sweep` every ``HERD_OUTBOX_SWEEP_SECONDS`` in each worker process."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker, worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="jobs-outbox-sweeper", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker, worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(settings.HERD_OUTBOX_SWEEP_SECONDS):
            close_old_connections()
            try:
                sweep()
            except Exception:
                logger.exception("the outbox sweep failed; trying again in %ss", settings.HERD_OUTBOX_SWEEP_SECONDS)
        connections.close_all()
