"""The notifications socket, ``/ws/notifications/``: a user's live events, and only theirs.

Only a session-authenticated user connects; the socket joins only ``user-<id>``; the
session is re-checked periodically and on every message, and a chatty client is closed.
Events: ``job.progress`` {job, progress, state}, ``notification`` {id, title, body, link,
unread}, ``notification.read`` {unread}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from importlib import import_module

from channels.auth import get_user
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from notifications.push import user_group
from scaling.ops import metrics

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4401  # the client stops reconnecting
CLOSE_TOO_MANY_MESSAGES = 4429
CLOSE_TRY_AGAIN = 1012  # "service restart": the client reconnects, and logs in to the socket again


class NotificationConsumer(AsyncWebsocketConsumer):
    recheck_seconds: float = 60.0

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()
            return
        self.user_id = user.pk
        self.group = user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        metrics.socket_opened()
        self.counted = True
        self.recheck_task = asyncio.create_task(self._recheck_every_interval())

    async def disconnect(self, code: int) -> None:
        task = getattr(self, "recheck_task", None)
        if task is not None:
            task.cancel()
        if getattr(self, "counted", False):
            self.counted = False
            metrics.socket_closed()
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

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

    # ----------------------------------------------------------------- session re-check

    async def _recheck_every_interval(self) -> None:
        while await self._sleep_then_check():
            pass

    async def _sleep_then_check(self) -> bool:
        await asyncio.sleep(self.recheck_seconds)
        return await self._close_unless_still_logged_in()

    async def _close_unless_still_logged_in(self) -> bool:
        """True if the socket stays open."""
        try:
            still = await self._session_still_maps_to_user()
        except Exception:
            # The session store is unreachable: let the client reconnect, which checks afresh.
            logger.warning("could not re-check the session of user %s's socket", self.user_id, exc_info=True)
            await self.close(code=CLOSE_TRY_AGAIN)
            return False
        if not still:
            await self.close(code=CLOSE_SESSION_ENDED)
        return still

    async def _session_still_maps_to_user(self) -> bool:
        session_key = self.scope["session"].session_key
        if not session_key:
            return False
        # A fresh store: the one in the scope holds what was loaded at connect.
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user = await get_user({"session": store})
        return user.is_authenticated and user.pk == self.user_id

    # ------------------------------------------------------- events from notifications.push

    async def job_progress(self, event: dict) -> None:
        await self._send_event(event, "job", "progress", "state")

    async def notification(self, event: dict) -> None:
        await self._send_event(event, "id", "title", "body", "link", "unread")

    async def notification_read(self, event: dict) -> None:
        await self._send_event(event, "unread")

    async def _send_event(self, event: dict, *fields: str) -> None:
        await self.send(text_data=json.dumps({"type": event["type"], **{name: event.get(name) for name in fields}}))
