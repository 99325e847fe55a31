"""A statement stuck on a primary cut off (connections accepted, never answered) holds its
request at most ``HERD_PRIMARY_STATEMENT_SECONDS`` plus one check's deadline.

Each connection to a primary is registered as Django opens it and its statements are timed
(``watch``). A thread of each process looks at them: a statement past that time makes it
ask its primary on a new connection, with a deadline (``primary_health.check``); on a
primary marked down (that check, or any other), every statement past that time has its
connection broken: the socket shut down, under the waiting thread. psycopg then raises
``OperationalError`` there, which read-only mode turns into a GET run again on a replica or
the clean 503 for a write (``scaling.db.consistency``, ``scaling.web.views``).

Why the socket: libpq has no read timeout, and psycopg 3 waits for a result by polling the
socket in slices of 0.1 s (``Connection.wait``, ``_WAIT_INTERVAL``) only to let signals
in; it ends on bytes, an error or the socket's end. A cancel request and
``statement_timeout`` need the server to answer, ``tcp_user_timeout`` needs unacknowledged
packets (a proxy or a stopped process's kernel acknowledges them). ``shutdown(SHUT_RDWR)``
wakes the poll at once (end of file); closing the descriptor would leave it polling (psycopg's
own warning in ``waiting.py``) and could close a number another thread reused, so the socket
is reached through a duplicate descriptor and checked to be the one registered. COMMIT and
fetches from server-side cursors are not timed (not statements through Django's cursor).
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


@dataclass(frozen=True)
class _Registered:
    raw: Any  # the psycopg connection Django opened
    address: tuple  # (local, peer) of its socket: how a reused descriptor is told apart


_lock = threading.Lock()
_registered: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Django connection -> _Registered
_running: dict[Any, float] = {}  # Django connection -> when its current statement started
_asked: dict[str, float] = {}  # alias -> when the watch last asked its primary
_checks = Workers("stuck-statement-check")
_watcher_pid: int | None = None


def _address(fd: int) -> tuple:
    with socket.socket(fileno=os.dup(fd)) as sock:
        return sock.getsockname(), sock.getpeername()


def watch(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created``: time each statement of a new connection to a primary."""
    from scaling.db.replicas import primary_aliases

    if connection.alias not in primary_aliases():
        return
    raw = connection.connection
    try:
        registered = _Registered(raw, _address(raw.pgconn.socket))
    except (OSError, psycopg.OperationalError):
        return  # no socket to break (it failed already)
    with _lock:
        _registered[connection] = registered
    if _timed not in connection.execute_wrappers:
        connection.execute_wrappers.append(_timed)
    _start_watcher()


def _timed(execute, sql, params, many, context):
    connection = context["connection"]
    _running[connection] = time.monotonic()
    try:
        return execute(sql, params, many, context)
    finally:
        _running.pop(connection, None)


def _start_watcher() -> None:
    global _watcher_pid
    with _lock:
        if _watcher_pid == os.getpid():
            return
        _watcher_pid = os.getpid()  # a forked child has no copy of the thread: it starts its own
        _running.clear()
    threading.Thread(target=_watch_forever, name="stuck-statements", daemon=True).start()


def _watch_forever() -> None:
    while True:
        time.sleep(settings.HERD_PRIMARY_STATEMENT_SECONDS / 4)
        end_stuck_statements()


def end_stuck_statements() -> None:
    """One look: ask the primaries that have a statement past its time (at most once per
    that time each), then break the connection of each such statement on a primary marked
    down."""
    from scaling.db.replicas import primary_health

    limit = settings.HERD_PRIMARY_STATEMENT_SECONDS
    now = time.monotonic()
    stuck = [(connection, started) for connection, started in list(_running.items()) if now - started > limit]
    to_ask = {connection.alias for connection, _ in stuck if primary_health.is_up(connection.alias)}
    to_ask = {alias for alias in to_ask if now - _asked.get(alias, -limit) >= limit}
    for alias in to_ask:
        _asked[alias] = now
    # Each check has its own deadline (twice HERD_REPLICA_CHECK_TIMEOUT): no wait here is longer.
    wait([_checks[alias].submit(functools.partial(primary_health.check, alias)) for alias in to_ask])
    for connection, started in stuck:
        if not primary_health.is_up(connection.alias) and _running.get(connection) == started:
            _break(connection)


def _break(connection: Any) -> None:
    """Shut down the socket of ``connection`` (another thread's) if it is still the one
    registered: the thread waiting on it gets an error at once."""
    with _lock:
        registered = _registered.get(connection)
    raw = connection.connection
    if registered is None or raw is not registered.raw or raw.closed:
        return
    with (
        contextlib.suppress(OSError, psycopg.OperationalError),
        socket.socket(fileno=os.dup(raw.pgconn.socket)) as sock,
    ):
        if (sock.getsockname(), sock.getpeername()) == registered.address:
            sock.shutdown(socket.SHUT_RDWR)
