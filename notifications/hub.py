"""One listener per replica process for all its notification sockets (Zulip's Tornado model).

Each event loop that serves sockets has one ``SocketHub``: its own channel-layer instance
and one receive loop. The hub joins a user's group (``user-<id>``, what
``notifications.push`` sends to) once, when that user's first socket on this process
opens, under a channel of its own for that user, and leaves it when the last one closes.
An event is received once per process and written to each of that user's sockets here,
serialized once. So a connect costs a ``group_add`` only for a user's first socket, and
one event to N sockets costs one Redis message and N frame writes, where a channel per
socket cost N wake-ups of N receive loops and N thread hops (Channels' ``dispatch``
closes old database connections on a worker thread for every event it handles).

Promises: an event reaches only the sockets registered under the user whose group it
was sent to (a socket registers under its own session's user, nothing a client says);
a socket whose client stops reading never holds up the others (each socket writes from
its own outbox, bounded); the session of every socket is re-checked every
``recheck_seconds``, once per session, not once per socket; the hub's group memberships
are renewed before channels-redis's group expiry drops them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Protocol

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers

from notifications.push import user_group

logger = logging.getLogger(__name__)


Frame = Callable[[dict], "str | None"]
SessionCheck = Callable[[str, int], Awaitable[bool]]


class Socket(Protocol):
    user_id: int
    session_key: str

    def deliver(self, text: str) -> None: ...

    def session_gone(self, unreachable: bool) -> None: ...


class SocketHub:
    recheck_seconds: float = 60.0
    # channels-redis drops a group member a day (group_expiry) after its group_add, sockets
    # or not: the hub joins again, at a re-check, once its join is this old.
    rejoin_seconds: float = 3600.0

    def __init__(self, frame: Frame, session_check: SessionCheck) -> None:
        self.frame = frame  # an event as the text its sockets get, or None to drop it
        self.session_check = session_check  # whether a session still maps to a user
        self.layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self.sockets: dict[int, set[Socket]] = {}
        self.channel_of: dict[int, str] = {}  # user id -> the hub's channel in their group
        self.user_of: dict[str, int] = {}  # and back: how an event finds its sockets
        self.joined: dict[int, asyncio.Future] = {}
        self.joined_at: dict[int, float] = {}
        self.numbers = itertools.count()
        self.base: str | None = None  # "herd-sockets.<this layer's prefix>!"
        self.tasks: set[asyncio.Task] = set()  # the listener, the recheck and leaves
        self.listener: asyncio.Task | None = None
        self.rechecker: asyncio.Task | None = None
        self.events_received = 0

    # ------------------------------------------------------------- sockets in and out

    async def add(self, socket: Socket) -> None:
        """Register an accepted socket; returns once the hub is in its user's group."""
        if self.base is None:
            self.base = (await self.layer.new_channel("herd-sockets")).partition("!")[0] + "!"
        user_id = socket.user_id
        self.sockets.setdefault(user_id, set()).add(socket)
        self._run_listener()
        joined = self.joined.get(user_id)
        if joined is None or (joined.done() and (joined.cancelled() or joined.exception() is not None)):
            channel = f"{self.base}u{user_id}.{next(self.numbers)}"
            self.user_of.pop(self.channel_of.get(user_id, ""), None)
            self.channel_of[user_id], self.user_of[channel] = channel, user_id
            joined = self.joined[user_id] = asyncio.ensure_future(self.layer.group_add(user_group(user_id), channel))
            self.joined_at[user_id] = time.monotonic()
        try:
            await asyncio.shield(joined)
        except BaseException:
            self.remove(socket)
            raise

    def remove(self, socket: Socket) -> None:
        """Forget a socket (idempotent); the hub leaves the group with its user's last socket."""
        user_id = socket.user_id
        sockets = self.sockets.get(user_id)
        if sockets is None or socket not in sockets:
            return
        sockets.discard(socket)
        if sockets:
            return
        del self.sockets[user_id]
        channel = self.channel_of.pop(user_id)
        self.user_of.pop(channel, None)
        self.joined_at.pop(user_id, None)
        self._spawn(self._leave(user_id, channel, self.joined.pop(user_id)))
        if not self.sockets:
            for task in (self.listener, self.rechecker):
                if task is not None:
                    task.cancel()
            self.listener = self.rechecker = None

    async def _leave(self, user_id: int, channel: str, joined: asyncio.Future) -> None:
        try:
            await joined
        except BaseException:
            return  # never joined
        try:
            await self.layer.group_discard(user_group(user_id), channel)
        except Exception:
            # The group's entries expire (channels-redis group_expiry); until then an event
            # for this user costs this process one message it drops.
            logger.warning("could not leave the group of user %s", user_id, exc_info=True)

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _run_listener(self) -> None:
        if self.listener is None or self.listener.done():
            self.listener = self._spawn(self._listen())
        if self.rechecker is None or self.rechecker.done():
            self.rechecker = self._spawn(self._recheck_every_interval())

    # -------------------------------------------------------------------- events in

    async def _listen(self) -> None:
        while True:
            try:
                channels, event = await self.layer.receive_single(self.base)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("the socket hub could not receive from the channel layer", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            self.events_received += 1
            self.fan_out([channels] if isinstance(channels, str) else channels, event)

    def fan_out(self, channels: list[str], event: dict) -> int:
        """Write ``event`` to the sockets of the users whose channels it was sent to; how many."""
        text = self.frame(event)
        if text is None:
            return 0
        written = 0
        for channel in channels:
            for socket in list(self.sockets.get(self.user_of.get(channel, -1), ())):
                socket.deliver(text)
                written += 1
        return written

    # ------------------------------------------------------------- sessions re-checked

    async def _recheck_every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_seconds)
            await self.recheck()

    async def recheck(self) -> None:
        """Check each session once; close its sockets if it no longer maps to their user.
        Join again the groups joined ``rejoin_seconds`` ago or more."""
        now = time.monotonic()
        for user_id, since in list(self.joined_at.items()):
            channel = self.channel_of.get(user_id)
            if now - since >= self.rejoin_seconds and channel is not None:
                self.joined_at[user_id] = now
                try:
                    await self.layer.group_add(user_group(user_id), channel)
                except Exception:
                    logger.warning("could not join the group of user %s again", user_id, exc_info=True)
        sessions: dict[tuple[str, int], list[Socket]] = {}
        for sockets in list(self.sockets.values()):
            for socket in sockets:
                sessions.setdefault((socket.session_key, socket.user_id), []).append(socket)
        for (session_key, user_id), sockets in sessions.items():
            try:
                unreachable = False
                if await self.session_check(session_key, user_id):
                    continue
            except Exception:
                logger.warning("could not re-check the session of user %s's sockets", user_id, exc_info=True)
                unreachable = True
            for socket in sockets:
                socket.session_gone(unreachable)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SocketHub] = weakref.WeakKeyDictionary()


def hub(frame: Frame, session_check: SessionCheck) -> SocketHub:
    """This event loop's hub (a replica serves on one loop; each test body runs its own)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = SocketHub(frame, session_check)
    return found
