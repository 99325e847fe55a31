"""Jobs read at least what the code that enqueued them had written.

``ReadAtLeastEnqueuerMiddleware`` (a Dramatiq middleware) stamps every message, when
it is enqueued, with the primary's WAL position (``herd_lsn``); the worker then runs
the actor inside ``scaling.consistency.at_least(herd_lsn)``, so its reads go to a
replica only once that replica has replayed everything the enqueuer committed, and to
the primary before. Messages are enqueued in ``transaction.on_commit``, so the stamp
is taken after the enqueuer's commit.
"""

from __future__ import annotations

import logging
import threading

from django.db import DatabaseError
from dramatiq.middleware import Middleware

from scaling import consistency

logger = logging.getLogger(__name__)

OPTION = "herd_lsn"


class ReadAtLeastEnqueuerMiddleware(Middleware):
    def __init__(self) -> None:
        self._local = threading.local()

    def before_enqueue(self, broker, message, delay: int) -> None:
        if OPTION in message.options:
            return  # a retry keeps its first position
        try:
            message.options[OPTION] = consistency.current_lsn()
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
