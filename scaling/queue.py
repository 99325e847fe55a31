"""Jobs read at least what the code that enqueued them had written.

``ReadAtLeastEnqueuerMiddleware`` (a Dramatiq middleware) stamps every message, when
it is enqueued, with the primary's WAL position (``herd_lsn``); the worker then runs
the actor inside ``scaling.db.consistency.at_least(herd_lsn)``, so its reads go to a
replica only once that replica has replayed everything the enqueuer committed, and to
the primary before. Messages are enqueued in ``transaction.on_commit``, so the stamp
is taken after the enqueuer's commit.

``CarryRequestIdMiddleware`` stamps each message a request enqueues with that request's
id (``herd_request_id``, from ``scaling.ops.logs``); the worker runs the message under that
id (or, for a message no request sent, its own message id), so every line logged while
it runs carries it, and ends with one ``herd.job`` line: actor, message id, outcome,
database aliases used, cache hits and misses, duration.
"""

from __future__ import annotations

import logging
import threading
import time

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
