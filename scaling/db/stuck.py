"""A round trip stuck on a primary cut off (connections accepted, never answered) holds its
request at most about ``HERD_PRIMARY_STATEMENT_SECONDS`` plus one check's deadline.

Each connection to a primary is registered as Django opens it (``watch``). A thread of each
process looks at them four times per that time: a connection busy at every look for longer
(psycopg holds its ``lock`` through each round trip: a statement, Django's health check,
COMMIT, a fetch) makes it ask that primary on a new connection, with a deadline
(``primary_health.check``); on a primary marked down (by that check or any other), each
connection busy that long is broken: its socket shut down under the waiting thread. psycopg
then raises ``OperationalError`` there, which read-only mode turns into a GET run again on a
replica, or the clean 503 for a write (``scaling.db.consistency``, ``scaling.web.views``).

Why the socket: libpq has no read timeout, and psycopg 3 waits for a result by polling the
socket in slices of 0.1 s (``Connection.wait``, ``_WAIT_INTERVAL``) only to let signals in;
it ends on bytes, an error or the socket's end. A cancel request and ``statement_timeout``
need the server to answer, ``tcp_user_timeout`` needs unacknowledged packets (a proxy or a
stopped process's kernel acknowledges them). ``shutdown(SHUT_RDWR)`` wakes the poll at once
(end of file); closing the descriptor would leave it polling (psycopg's own warning in
``waiting.py``) and could close a number another thread reused, so the socket is reached
through a duplicate descriptor and checked to be the one registered. Nothing here calls
libpq on another thread's connection.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
import weakref
from concurrent.futures import wait
from dataclasses import dataclass
from typing import Any

import psycopg
from django.conf import settings

from scaling.deadline import Workers


@dataclass(frozen=True, eq=False)
class _Registered:
    raw: Any  # the psycopg connection Django opened
    fd: int  # its socket's descriptor (libpq keeps one for a connection's life)
    address: tuple  # (local, peer) of that socket: how a reused descriptor is told apart


_lock = threading.Lock()
_registered: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Django connection -> _Registered
_busy_since: dict[_Registered, float] = {}  # the watch thread's own: busy at every look since
_asked: dict[str, float] = {}  # alias -> when the watch last asked its primary
_checks = Workers("stuck-statement-check")
_watcher_pid: int | None = None


def _address(fd: int) -> tuple:
    with socket.socket(fileno=os.dup(fd)) as sock:
        return sock.getsockname(), sock.getpeername()


def watch(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created``: watch a new connection to a primary."""
    from scaling.db.replicas import primary_aliases

    if connection.alias not in primary_aliases():
        return
    raw = connection.connection
    try:
        fd = raw.pgconn.socket
        registered = _Registered(raw, fd, _address(fd))
    except (OSError, psycopg.OperationalError):
        return  # no socket to break (it failed already)
    global _watcher_pid
    with _lock:
        _registered[connection] = registered
        if _watcher_pid == os.getpid():
            return
        _watcher_pid = os.getpid()  # a forked child has no copy of the thread: it starts its own
    threading.Thread(target=_watch_forever, name="stuck-statements", daemon=True).start()


def _watch_forever() -> None:
    while True:
        time.sleep(settings.HERD_PRIMARY_STATEMENT_SECONDS / 4)
        end_stuck_statements()


def end_stuck_statements() -> None:
    """One look: ask the primaries that have a connection busy past its time (each at most
    once per that time), then break each such connection to a primary marked down."""
    global _busy_since
    from scaling.db.replicas import primary_health

    limit = settings.HERD_PRIMARY_STATEMENT_SECONDS
    now = time.monotonic()
    with _lock:
        watched = [(connection, registered) for connection, registered in _registered.items()]
    busy = [(c, r) for c, r in watched if r.raw.lock.locked() and c.connection is r.raw]
    _busy_since = {registered: _busy_since.get(registered, now) for _, registered in busy}
    stuck = [(c, r) for c, r in busy if now - _busy_since[r] > limit]
    to_ask = {c.alias for c, _ in stuck if primary_health.is_up(c.alias)}
    to_ask = {alias for alias in to_ask if now - _asked.get(alias, -limit) >= limit}
    for alias in to_ask:
        _asked[alias] = now
    # Each check has its own deadline (twice HERD_REPLICA_CHECK_TIMEOUT): no wait here is longer.
    wait([_checks[alias].submit(functools.partial(primary_health.check, alias)) for alias in to_ask])
    for connection, registered in stuck:
        if not primary_health.is_up(connection.alias):
            _break(connection, registered)


def _break(connection: Any, registered: _Registered) -> None:
    """Shut down the socket of ``connection`` (another thread's) if it is still the one
    registered: the thread waiting on it gets an error at once."""
    if connection.connection is not registered.raw:
        return
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(registered.fd)) as sock:
        if (sock.getsockname(), sock.getpeername()) == registered.address:
            sock.shutdown(socket.SHUT_RDWR)
