"""The notifications socket, ``/ws/notifications/``: a user's live events, and only theirs.

Only a session-authenticated user connects; the socket is registered with its process's
hub (``notifications.hub``) under its own user only, and the hub, in ``user-<id>`` for
as long as that user has a socket here, writes it that user's events. The session is
re-checked periodically (by the hub, once per session) and on every message; a chatty
client is closed. Events: ``job.progress`` {job, progress, state}, ``notification``
{id, title, body, link, unread}, ``notification.read`` {unread}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from importlib import import_module

from channels.auth import get_user
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from notifications import hub as hubs
from scaling.ops import metrics

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4401  # the client stops reconnecting
CLOSE_TOO_MANY_MESSAGES = 4429
CLOSE_TRY_AGAIN = 1012  # "service restart": the client reconnects, and logs in to the socket again

# The fields each event type carries to the browser; any other type is dropped.
EVENT_FIELDS = {
    "job.progress": ("job", "progress", "state"),
    "notification": ("id", "title", "body", "link", "unread"),
    "notification.read": ("unread",),
}
# Frames a socket may have waiting for a client that does not read; beyond, they are dropped
# (delivery is at most once: the stored notifications are the truth).
OUTBOX_LIMIT = 100


def frame(event: dict) -> str | None:
    """The text a socket sends for an event from ``notifications.push``; None for an unknown type."""
    fields = EVENT_FIELDS.get(event.get("type"))
    if fields is None:
        logger.warning("dropped a socket event of unknown type %r", event.get("type"))
        return None
    return json.dumps({"type": event["type"], **{name: event.get(name) for name in fields}})


async def session_still_maps_to_user(session_key: str, user_id: int) -> bool:
    if not session_key:
        return False
    # A fresh store: the one in a socket's scope holds what was loaded at connect.
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = await get_user({"session": store})
    return user.is_authenticated and user.pk == user_id


def this_loops_hub() -> hubs.SocketHub:
    return hubs.hub(frame, session_still_maps_to_user)


class NotificationConsumer(AsyncWebsocketConsumer):
    # No channel per socket: the process's hub receives for all its sockets.
    channel_layer_alias = None

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Also when the socket's task is cancelled without a disconnect.
            if getattr(self, "hub", None) is not None:
                self.hub.remove(self)
            self._count_closed()

    async def dispatch(self, message: dict) -> None:
        # Channels' own dispatch first closes old database connections on the thread of
        # database_sync_to_async: one thread hop per connect, message and disconnect, one
        # after the other (most of a replica's CPU when thousands of sockets close at once).
        # This consumer reaches the database only through database_sync_to_async
        # (get_user), which closes old connections around each call itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()
            return
        self.user_id = user.pk
        self.session_key = self.scope["session"].session_key or ""
        self.outbox: deque[str | dict] = deque()
        self.writer: asyncio.Task | None = None
        self.accepted = False
        # In the group before the client hears it is connected, so it misses nothing sent
        # after; what arrives in between waits in the outbox until the accept is sent.
        self.hub = this_loops_hub()
        try:
            await self.hub.add(self)
        except Exception:
            logger.warning("could not join the group of user %s's sockets", self.user_id, exc_info=True)
            await self.close()
            return
        await self.accept()
        self.accepted = True
        metrics.socket_opened()
        self.counted = True
        self._write_soon()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "hub", None) is not None:
            self.hub.remove(self)
        self._count_closed()

    def _count_closed(self) -> None:
        if getattr(self, "counted", False):
            self.counted = False
            metrics.socket_closed()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Clients send only keep-alives; what they say is never acted on.
        if self._one_message_too_many():
            await self.close(code=CLOSE_TOO_MANY_MESSAGES)
            return
        await self._close_unless_still_logged_in()

    def _one_message_too_many(self) -> bool:
        # Per socket, in this process: a socket lives on one replica.
        now = time.monotonic()
        if now - getattr(self, "window_started", -60.0) >= 60.0:
            self.window_started, self.messages_in_window = now, 0
        self.messages_in_window += 1
        return self.messages_in_window > settings.HERD_SOCKET_MESSAGES_PER_MINUTE

    async def _close_unless_still_logged_in(self) -> bool:
        """True if the socket stays open."""
        try:
            still = await session_still_maps_to_user(self.session_key, self.user_id)
        except Exception:
            # The session store is unreachable: let the client reconnect, which checks afresh.
            logger.warning("could not re-check the session of user %s's socket", self.user_id, exc_info=True)
            await self.close(code=CLOSE_TRY_AGAIN)
            return False
        if not still:
            await self.close(code=CLOSE_SESSION_ENDED)
        return still

    # ---------------------------------------------------------- what the hub calls

    def deliver(self, text: str) -> None:
        """Queue one frame; the socket's own writer sends it, so a slow client holds up no other."""
        if len(self.outbox) >= OUTBOX_LIMIT:
            logger.warning("dropped an event for user %s's socket: %s frames unread", self.user_id, OUTBOX_LIMIT)
            return
        self.outbox.append(text)
        self._write_soon()

    def session_gone(self, unreachable: bool) -> None:
        """The hub's periodic re-check found the session ended (or its store unreachable)."""
        self.outbox.append({"type": "websocket.close", "code": CLOSE_TRY_AGAIN if unreachable else CLOSE_SESSION_ENDED})
        self._write_soon()

    def _write_soon(self) -> None:
        if self.accepted and self.outbox and (self.writer is None or self.writer.done()):
            self.writer = asyncio.get_running_loop().create_task(self._write_outbox())

    async def _write_outbox(self) -> None:
        while self.outbox:
            item = self.outbox.popleft()
            try:
                if isinstance(item, str):
                    await self.send(text_data=item)
                else:
                    self.outbox.clear()
                    await self.base_send(item)
            except Exception:
                # The client went away; its disconnect removes the socket from the hub.
                self.outbox.clear()
                return
