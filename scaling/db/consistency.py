"""Read-your-writes: a user never reads data older than their own last write.

After a request writes, the primary's WAL position is kept for its user; their later
reads go to a replica only once it has replayed it. ``use_primary()``, ``at_least(lsn)``
and ``written_for(user)`` are for code that must choose. While the primary is unreachable
(read-only mode, ``read_only_replica``), reads go to a healthy replica whatever it has
replayed, and a GET that met the primary's failure runs again there. The rules:
docs/READS.md.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.db import DatabaseError, connections, transaction
from django.http import HttpRequest, HttpResponse
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from scaling.db import positions
from scaling.db.replicas import CONNECTION_ERRORS, PRIMARY, primary_health, replica_aliases, replica_health

logger = logging.getLogger(__name__)

# Raise the stored LSN, never lower it, and refresh its time to live either way
# (ARGV[2]; 0: keep it for good).
_RAISE_LSN = """
local current = tonumber(redis.call('GET', KEYS[1]))
if (not current) or tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
end
if ARGV[2] ~= '0' then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


@dataclass
class ReadState:
    """What this request (or job) has done and must see."""

    user_id: Callable[[], str | None] = lambda: None
    wrote: bool = False
    # The primary from now on: a request that may write (its reads check what it is about
    # to change, and cannot be run again if a replica fails under them), or a replica failed.
    pinned: bool = False
    min_lsn: int | None = None
    min_lsn_loaded: bool = False
    replica: str | None = None
    shard_replicas: set[str] = field(default_factory=set)  # shard replicas read so far
    caught_up: dict[tuple[str, int], bool] = field(default_factory=dict)
    primary_asked: bool = False  # read-only mode asked whether the primary is back (``_primary_back``)

    def required_lsn(self) -> int | None:
        if not self.min_lsn_loaded:
            self.min_lsn_loaded = True
            self.min_lsn = max_lsn(self.min_lsn, stored_lsn(self.user_id()))
        return self.min_lsn


_state: ContextVar[ReadState | None] = ContextVar("herd_read_state", default=None)
# A position every read in the current block must reach (``at_least``).
_floor: ContextVar[int | None] = ContextVar("herd_read_floor", default=None)
# How many ``use_primary()`` blocks enclose the current code.
_primary_depth: ContextVar[int] = ContextVar("herd_primary_depth", default=0)


def max_lsn(*lsns: int | None) -> int | None:
    known = [lsn for lsn in lsns if lsn is not None]
    return max(known) if known else None


# A position no replica can be shown to have reached: it sends reads to the primary.
UNKNOWN_LSN = 1 << 62


def _lsn_key(user_id: str) -> str:
    return f"herd:lsn:user:{user_id}"


def stored_lsn(user_id: str | None) -> int | None:
    """The LSN the user's reads must reach, or None (no recent write, or Redis down)."""
    if not user_id:
        return None
    try:
        value = get_redis_connection("state").get(_lsn_key(user_id))
    except RedisError:
        # Without the stored position, only the primary is certainly fresh enough.
        return UNKNOWN_LSN
    return int(value) if value is not None else None


def remember_lsn(user_id: str, lsn: int) -> None:
    if not raise_position(_lsn_key(user_id), lsn, settings.HERD_READ_YOUR_WRITES_SECONDS):
        logger.warning("could not store the LSN of user %s: their next reads may be stale", user_id)


def raise_position(key: str, lsn: int, ttl: int = 0) -> bool:
    """Raise the position stored under ``key`` in the state Redis to ``lsn`` (never lower
    it); ``ttl`` seconds to live, 0 for good. False when Redis could not be reached."""
    try:
        get_redis_connection("state").eval(_RAISE_LSN, 1, key, lsn, ttl)
    except RedisError:
        return False
    return True


def written_for(user_id: int | str) -> None:
    """Code writing on a user's behalf outside their requests (a job): once committed,
    that user's next reads must see it, as if they had written it themselves."""
    transaction.on_commit(lambda: remember_lsn(str(user_id), positions.current()))


@contextlib.contextmanager
def use_primary() -> Iterator[None]:
    """Read from the primary inside this block: for code that must not see stale data."""
    token = _primary_depth.set(_primary_depth.get() + 1)
    try:
        yield
    finally:
        _primary_depth.reset(token)


@contextlib.contextmanager
def at_least(lsn: int | None) -> Iterator[None]:
    """Reads inside this block see data at least as new as ``lsn``.

    A job passes the ``positions.current()`` of the request that enqueued it; the caches pass
    the position of the last write to what they are about to fill.
    """
    token = _floor.set(max_lsn(_floor.get(), lsn))
    try:
        yield
    finally:
        _floor.reset(token)


def primary_required() -> bool:
    """Whether reads here must use a primary whatever the replicas have replayed:
    ``use_primary``, or a write or a failed replica earlier in this request."""
    state = _state.get()
    return bool(_primary_depth.get() or (state is not None and (state.wrote or state.pinned)))


def current_state() -> ReadState | None:
    return _state.get()


def _required_position(min_lsn: int | None = None) -> int | None:
    """The WAL position reads here must reach: None for any, ``UNKNOWN_LSN`` when only the
    primary will do (``use_primary``, a transaction, a write or a failed replica earlier)."""
    state = _state.get()
    if primary_required() or connections[PRIMARY].in_atomic_block:
        return UNKNOWN_LSN
    return max_lsn(min_lsn, _floor.get(), state.required_lsn() if state is not None else None)


def wait_for_replica(timeout: float, interval: float = 0.005) -> bool:
    """Wait up to ``timeout`` for a healthy replica to replay everything the reads here
    must see (``at_least``, and the user's last write in a request), so that they leave
    the primary alone: for cache fills and background work, which can afford a few
    milliseconds. True when a replica may serve them; False (they read the primary)
    when none has replayed in time, none is healthy, or the primary is required anyway."""
    required = _required_position()
    if required is None:
        return True
    if required >= UNKNOWN_LSN or not primary_health.is_up():
        return False  # read-only mode: nothing new to wait for, reads go to a replica anyway
    state = _state.get()
    deadline = time.monotonic() + timeout
    while True:
        for alias in replica_health.healthy_aliases():
            if has_replayed(alias, required):  # asked afresh on every pass
                if state is not None:
                    state.caught_up[(alias, required)] = True  # read_alias trusts it
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def note_write() -> None:
    """Called by the router for every write: later reads in this request use the primary."""
    state = _state.get()
    if state is not None:
        state.wrote = True


def has_replayed(alias: str, lsn: int, state: ReadState | None = None) -> bool:
    """Whether replica ``alias`` has replayed ``lsn``; asked once per request and position."""
    key = (alias, lsn)
    if state is not None and key in state.caught_up:
        return state.caught_up[key]
    if replica_health.replayed_at_last_check(alias) >= lsn:
        return True  # an old position: no need to ask
    try:
        answer = positions.replayed(alias) >= lsn
    except DatabaseError:
        replica_health.mark_down(alias)
        answer = False
    if state is not None:
        state.caught_up[key] = answer
    return answer


def read_only_replica(primary: str = PRIMARY, replicas: list[str] | None = None) -> str | None:
    """Read-only mode, the one rule for every primary (the main one, each shard database):
    while ``primary`` is unreachable, a healthy replica of it (one of ``replicas``, by
    default the main database's) serves every read, whatever it has replayed and however
    it fared in a check made while the primary still answered (``can_stand_in``: the
    kill's instant often finds a synchronous standby just past the lag thresholds). None
    while the primary is up, inside a transaction on it, or with no replica answering.

    The price (docs/READS.md): until the primary is back or replaced, a user may not see
    their last moments of writes; nothing acknowledged is lost, a write being
    acknowledged only once the primary committed it.
    """
    if primary_health.is_up(primary) or connections[primary].in_atomic_block:
        return None
    candidates = replica_aliases() if replicas is None else replicas
    healthy = [alias for alias in candidates if replica_health.can_stand_in(alias, primary)]
    if not healthy:
        return None
    state = _state.get()
    if state is not None and state.replica in healthy:
        return state.replica
    return replica_health.spread(healthy)[0]


def _primary_back(stand_in: str, min_lsn: int | None, state: ReadState | None) -> bool:
    """Whether a read the stand-in is not fresh enough for (its user wrote on the primary
    since: another app replica may have found it back first) finds the primary answering
    again. Asked now, with its deadline (``primary_health.check``), once per request; a
    read the stand-in can serve never waits for it."""
    required = _required_position(min_lsn)
    if required is None or (required < UNKNOWN_LSN and has_replayed(stand_in, required, state)):
        return False
    if state is not None:
        if state.primary_asked:
            return False
        state.primary_asked = True
    return primary_health.check(PRIMARY)


def read_alias(min_lsn: int | None = None) -> str:
    """The database a read should use now: a fresh-enough healthy replica, else the primary;
    while the primary is unreachable, any healthy replica (``read_only_replica``).

    ``min_lsn`` adds a position the read must reach (the query cache passes the
    position of the last write to the tables it reads).
    """
    state = _state.get()
    if (stand_in := read_only_replica()) is not None and not _primary_back(stand_in, min_lsn, state):
        if state is not None:
            state.replica = stand_in
        return stand_in
    required = _required_position(min_lsn)
    if required is not None and required >= UNKNOWN_LSN:
        return PRIMARY
    healthy = replica_health.healthy_aliases()
    if not healthy:
        return PRIMARY
    preferred = state.replica if state is not None and state.replica in healthy else None
    for alias in [preferred] if preferred else replica_health.spread(healthy):
        if required is None or has_replayed(alias, required, state):
            if state is not None:
                state.replica = alias
            return alias
    return PRIMARY


def note_shard_replica_read(alias: str) -> None:
    """Called by the shard router when a read goes to a shard's replica (for ``process_exception``)."""
    state = _state.get()
    if state is not None:
        state.shard_replicas.add(alias)


def _session_user_id(request: HttpRequest) -> str | None:
    session = getattr(request, "session", None)
    if session is None:
        return None
    if settings.SESSION_COOKIE_NAME not in request.COOKIES and not session.modified:
        return None  # an anonymous visitor who has no session: nothing to look up
    return session.get(SESSION_KEY)


_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _stand_ins(down: list[str]) -> list[str]:
    """The replicas that can serve the reads of the primaries ``down``. One whose last check
    says it cannot is asked again now: that check may predate the failure (one that timed out
    under the load of a failover's first instant, or a replica taken out since)."""
    shard_replicas = getattr(settings, "SHARD_REPLICAS", {})
    standing = []
    for primary in down:
        for alias in replica_aliases() if primary == PRIMARY else [shard_replicas.get(primary)]:
            if alias and (
                replica_health.can_stand_in(alias, primary) or replica_health.check(alias, primary).reachable
            ):
                standing.append(alias)
    return standing


def _position_after_write() -> int:
    """A write answered as done while this process had the primary marked down (it came
    back before the re-check said so, or went away just after the commit): its position
    from this request's own connection, which just wrote; if that fails too, one no replica
    reaches, so its writer reads the primary (or, read-only, a replica) until it expires."""
    try:
        return positions.current()
    except CONNECTION_ERRORS:
        return UNKNOWN_LSN


class ReadYourWritesMiddleware:
    """Opens the read state of each request and records its writes' LSN at the end.

    Sits after the session middleware: the user id comes from the session, so finding
    it costs no database query (the auth middleware's user lookup itself is routed). A
    request that may write (POST, PUT, PATCH, DELETE) reads the primary throughout.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        state = ReadState(user_id=lambda: _session_user_id(request), pinned=request.method not in _SAFE_METHODS)
        for alias in primary_health.down():
            # This thread's connection to a primary found away may be one a partition holds
            # (never answered): a write opens a new one, which fails in its connect timeout.
            connections[alias].close()
        token = _state.set(state)
        try:
            response = self.get_response(request)
            if state.wrote and (user_id := _session_user_id(request)):
                lsn = primary_health.position()
                if lsn is None and response.status_code < 500:
                    lsn = _position_after_write()
                # No position: the primary is away, and whatever this request wrote was not committed.
                if lsn is not None:
                    remember_lsn(user_id, lsn)
            return response
        finally:
            _state.reset(token)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A database failed under a GET: run the view once more without it. A primary that
        does not answer puts reads in read-only mode (``read_only_replica``); else each
        replica this request read is taken out and the view runs on the primary."""
        state = _state.get()
        if state is None or request.method not in ("GET", "HEAD") or not isinstance(exception, CONNECTION_ERRORS):
            return None
        if down := primary_health.unreachable():
            standing = _stand_ins(down)
            logger.warning(
                "primary %s unreachable during %s; read-only, reading from %s: %s",
                ", ".join(down),
                request.path,
                ", ".join(standing) or "no replica (none answers)",
                exception,
            )
            # This thread's connection to a stand-in may be on the server just lost (under
            # Patroni the replica listener sends reads to the primary while no standby is
            # up, and keeps those sessions): the re-run opens new ones.
            for alias in standing:
                connections[alias].close()
        else:
            used = [alias for alias in (state.replica, *sorted(state.shard_replicas)) if alias]
            if not used:
                return None
            logger.warning(
                "replica %s failed during %s; retrying on the primary: %s", ", ".join(used), request.path, exception
            )
            # Which one failed is not in the error: each replica this request read is taken out
            # until its next health check (a healthy one costs reads on the primary that long).
            for alias in used:
                replica_health.mark_down(alias)
                connections[alias].close()
            state.replica = None
            state.shard_replicas.clear()
            state.pinned = True
        match = request.resolver_match
        return match.func(request, *match.args, **match.kwargs)
