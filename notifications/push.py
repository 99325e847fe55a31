"""Push events to a user's sockets from synchronous code (workers, WSGI views).

One event loop and one channel layer per process, so Redis connections are reused.
``push`` never raises (best effort: the stored rows are the truth) and blocks its caller;
``push_on_commit`` announces nothing a rollback could take back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import BaseChannelLayer, channel_layers
from django.db import transaction

logger = logging.getLogger(__name__)

PUSH_TIMEOUT_SECONDS = 2.0


def user_group(user_id: int | str) -> str:
    """The group of one user's sockets. ``int()`` so that nothing but an id can become a name."""
    return f"user-{int(user_id)}"


class _PushLoop:
    """The process's push loop and its channel layer, started on first use (and again after a fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.layer: BaseChannelLayer | None = None

    def get(self) -> tuple[asyncio.AbstractEventLoop, BaseChannelLayer]:
        with self._lock:
            # A forked child (a Dramatiq worker process) inherits the objects but not the thread.
            if self._pid != os.getpid() or self.thread is None or not self.thread.is_alive():
                self.loop = asyncio.new_event_loop()
                self.thread = threading.Thread(target=self.loop.run_forever, name="herd-push", daemon=True)
                self.thread.start()
                # Its own instance, not the one consumers share: this one lives on the push loop only.
                self.layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
                self._pid = os.getpid()
            return self.loop, self.layer


_push_loop = _PushLoop()


def channel_layer() -> BaseChannelLayer:
    """The channel layer pushes go through (for tests and diagnostics)."""
    return _push_loop.get()[1]


def push(user_id: int | str, event: dict[str, Any]) -> bool:
    """Send ``event`` (its ``type`` names the consumer's handler) to the user's sockets.

    Returns whether the channel layer accepted it; failures are logged, never raised.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("push() blocks; async code should await the channel layer's group_send itself")
    try:
        loop, layer = _push_loop.get()
        future = asyncio.run_coroutine_threadsafe(layer.group_send(user_group(user_id), event), loop)
    except Exception:
        logger.exception("could not schedule a %s push to user %s", event.get("type"), user_id)
        return False
    try:
        future.result(timeout=PUSH_TIMEOUT_SECONDS)
    except Exception:
        future.cancel()
        logger.warning("could not push %s to user %s", event.get("type"), user_id, exc_info=True)
        return False
    return True


def push_on_commit(user_id: int | str, event: dict[str, Any], using: str | None = None) -> None:
    """Push once the current transaction commits (at once outside a transaction)."""
    transaction.on_commit(lambda: push(user_id, event), using=using)
