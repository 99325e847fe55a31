"""The Dramatiq broker, and what every message carries from the code that sent it.

``ReadAtLeastEnqueuerMiddleware`` stamps the primary's WAL position (``herd_lsn``) and runs
the actor inside ``at_least`` it; ``CarryRequestIdMiddleware`` carries the request id and
logs one ``herd.job`` line per message (docs/OPERATIONS.md). ``WorkerHeartbeat`` touches
``HERD_WORKER_HEARTBEAT_FILE`` while the worker's consumer and worker threads all live, and
on through a graceful shutdown: the worker pod's liveness probe reads its age
(``python -m scaling.heartbeat``; docs/DEPLOY.md).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError
from dramatiq.middleware import Middleware

from scaling.db import consistency, positions
from scaling.ops import logs

logger = logging.getLogger(__name__)

OPTION = "herd_lsn"
REQUEST_ID_OPTION = "herd_request_id"
job_logger = logging.getLogger("herd.job")


class ReadAtLeastEnqueuerMiddleware(Middleware):
    def __init__(self) -> None:
        self._local = threading.local()

    def before_enqueue(self, broker, message, delay: int) -> None:
        if OPTION in message.options:
            return  # a retry keeps its first position
        try:
            message.options[OPTION] = positions.current()
        except DatabaseError:
            # No primary to ask: the job's reads go to the primary (once it is back).
            message.options[OPTION] = consistency.UNKNOWN_LSN
            logger.warning("enqueued %s without a WAL position", message.actor_name)

    def before_process_message(self, broker, message) -> None:
        block = consistency.at_least(message.options.get(OPTION))
        block.__enter__()
        self._local.block = block

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        block = getattr(self._local, "block", None)
        if block is not None:
            self._local.block = None
            block.__exit__(None, None, None)

    after_skip_message = after_process_message


class CarryRequestIdMiddleware(Middleware):
    def __init__(self) -> None:
        self._local = threading.local()

    def before_enqueue(self, broker, message, delay: int) -> None:
        request_id = logs.current_request_id()
        if request_id is not None and REQUEST_ID_OPTION not in message.options:
            message.options[REQUEST_ID_OPTION] = request_id

    def before_process_message(self, broker, message) -> None:
        request_id = message.options.get(REQUEST_ID_OPTION) or message.message_id
        self._local.token = logs.begin(request_id)

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        token = getattr(self._local, "token", None)
        if token is None:
            return
        self._local.token = None
        record = logs.current()
        duration_ms = round((time.perf_counter() - record.started) * 1000, 2)
        outcome = "skipped" if exception is None and result is _SKIPPED else "failed" if exception else "done"
        try:
            job_logger.log(
                logging.WARNING if exception else logging.INFO,
                "%s %s %s %.1fms",
                message.actor_name,
                message.message_id,
                outcome,
                duration_ms,
                extra={
                    "herd": {
                        "actor": message.actor_name,
                        "message_id": message.message_id,
                        "outcome": outcome,
                        "error": repr(exception) if exception else None,
                        "db": sorted(record.aliases),
                        "cache_hits": record.cache_hits,
                        "cache_misses": record.cache_misses,
                        "duration_ms": duration_ms,
                    }
                },
            )
        finally:
            logs.end(token)

    def after_skip_message(self, broker, message) -> None:
        self.after_process_message(broker, message, result=_SKIPPED)


_SKIPPED = object()


class WorkerHeartbeat(Middleware):
    """Touches the heartbeat file every ``HERD_WORKER_HEARTBEAT_SECONDS`` while the worker is
    whole: every consumer thread (one per queue) and worker thread alive. A thread that
    died, or a process stuck so hard its heartbeat thread cannot run, lets the file age,
    and the liveness probe restarts the pod. From ``before_worker_shutdown`` (SIGTERM) it
    beats regardless, a worker finishing its last job being drained on purpose; after
    ``after_worker_shutdown`` its thread ends."""

    def __init__(self) -> None:
        self._events: dict[object, tuple[threading.Event, threading.Event]] = {}

    @staticmethod
    def whole(worker) -> bool:
        threads = [*worker.consumers.values(), *worker.workers]
        return bool(threads) and all(thread.is_alive() for thread in threads)

    def after_worker_boot(self, broker, worker) -> None:
        stopping, stopped = self._events[worker] = (threading.Event(), threading.Event())
        path = Path(settings.HERD_WORKER_HEARTBEAT_FILE)
        args = (worker, path, stopping, stopped)
        threading.Thread(target=self._beat, args=args, name="herd-heartbeat", daemon=True).start()

    def before_worker_shutdown(self, broker, worker) -> None:
        if worker in self._events:
            self._events[worker][0].set()

    def after_worker_shutdown(self, broker, worker) -> None:
        if worker in self._events:
            self._events.pop(worker)[1].set()

    def _beat(self, worker, path: Path, stopping: threading.Event, stopped: threading.Event) -> None:
        while True:
            if stopping.is_set() or self.whole(worker):
                path.touch()
            if stopped.wait(settings.HERD_WORKER_HEARTBEAT_SECONDS):
                return
