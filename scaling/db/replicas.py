"""Which databases may serve reads right now, checked at most every
``HERD_REPLICA_CHECK_INTERVAL`` seconds per process (docs/READS.md):

- ``replica_health``: a read replica is reachable, answers its check's query within
  ``HERD_REPLICA_SLOW_SECONDS`` and lags little by time *or* by bytes; while its primary
  is unreachable, reachable is enough (``can_stand_in``: also by a check made while the
  primary still answered, which may have found it lagging or slow). One that does not answer within
  ``HERD_REPLICA_CHECK_TIMEOUT`` (hung) is down: its check never hangs the caller.
- ``primary_health``: a primary (the main one, each shard database) is reachable; marked
  down on a connection failure. While it is down, its replicas serve every read
  (read-only mode) and writes end on the 503 page.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections

from scaling.db import positions
from scaling.deadline import Workers

PRIMARY = "default"
# What a query raises when its server cannot be reached (or went away under it).
CONNECTION_ERRORS = (OperationalError, InterfaceError)
_CURRENT_POSITION = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
_REPLICA_STATE = (
    "SELECT pg_is_in_recovery(), EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()),"
    " COALESCE(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint, 0)"
)


def primary_aliases() -> list[str]:
    """The databases that take writes: the main primary and every shard database."""
    return [PRIMARY, *getattr(settings, "SHARD_DATABASES", ())]


def replica_aliases() -> list[str]:
    """The main database's read replicas (not the shard databases, nor their replicas)."""
    shards = {*getattr(settings, "SHARD_DATABASES", ()), *getattr(settings, "SHARD_REPLICAS", {}).values()}
    return [alias for alias in settings.DATABASES if alias != PRIMARY and alias not in shards]


@dataclass(frozen=True)
class ReplicaStatus:
    alias: str
    healthy: bool
    checked_at: float
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    error: str = ""
    replay_lsn: int = 0  # what it had replayed when checked
    # It answered its check (lagging or slow maybe): it can serve reads while its primary is away.
    reachable: bool = False


class ReplicaHealth:
    """Process-wide, thread-safe cache of each replica's last health check."""

    def __init__(self) -> None:
        self._statuses: dict[str, ReplicaStatus] = {}
        self._lock = threading.Lock()
        self._probes = Workers("replica-check")
        # Used by each alias' probe thread only; kept with the parameters it was made with.
        self._probe_connections: dict[str, tuple[dict, psycopg.Connection]] = {}

    def healthy_aliases(self) -> list[str]:
        return [alias for alias in replica_aliases() if self.is_healthy(alias)]

    def is_healthy(self, alias: str, primary: str = PRIMARY) -> bool:
        """Whether replica ``alias`` of ``primary`` may serve reads, checked at most every
        ``HERD_REPLICA_CHECK_INTERVAL`` seconds."""
        status = self._statuses.get(alias)
        if status is None or time.monotonic() - status.checked_at >= settings.HERD_REPLICA_CHECK_INTERVAL:
            status = self.check(alias, primary)
        return status.healthy

    def can_stand_in(self, alias: str, primary: str = PRIMARY) -> bool:
        """Whether replica ``alias`` may serve every read while ``primary`` is unreachable
        (read-only mode): it answered its last check, however far behind or slowly. A check
        made just before the primary went away judged it against the primary (lag, speed):
        that verdict is no reason to send reads to a primary that is gone."""
        status = self._statuses.get(alias)
        if status is None or time.monotonic() - status.checked_at >= settings.HERD_REPLICA_CHECK_INTERVAL:
            status = self.check(alias, primary)
        return status.healthy or status.reachable

    def replayed_at_last_check(self, alias: str) -> int:
        """What ``alias`` had replayed when last checked (0 if unknown): a position at or
        below it needs no question to the replica."""
        status = self._statuses.get(alias)
        return status.replay_lsn if status is not None and status.healthy else 0

    def statuses(self) -> list[ReplicaStatus]:
        """The last check of each replica checked so far, without checking (``scaling.ops.metrics``)."""
        return [status for alias in replica_aliases() if (status := self._statuses.get(alias)) is not None]

    def mark_down(self, alias: str, error: str = "failed during a query") -> None:
        """Take a replica out until its next check (``HERD_REPLICA_CHECK_INTERVAL``), with
        every replica database the same server holds (a shard's beside the main one's): a
        server that failed under one is not tried again under another."""
        server = _server(alias)
        now = time.monotonic()
        with self._lock:
            for other in _all_replicas():
                if other == alias or _server(other) == server:
                    self._statuses[other] = ReplicaStatus(other, False, now, error=error)

    @staticmethod
    def spread(aliases: list[str]) -> list[str]:
        """The aliases in a random order, so requests spread over the replicas."""
        return random.sample(aliases, len(aliases))

    def check(self, alias: str, primary: str = PRIMARY) -> ReplicaStatus:
        """Measure one replica of ``primary`` now and remember the answer.

        The replica is asked on a connection of its own, on a thread of its own, for at
        most ``HERD_REPLICA_CHECK_TIMEOUT`` seconds: one that does not answer (hung,
        partitioned) is unhealthy ("no answer"), and while that question is still
        unanswered no other is sent (``scaling.deadline``)."""
        now = time.monotonic()
        timeout = settings.HERD_REPLICA_CHECK_TIMEOUT
        params = {**connections[alias].get_connection_params(), "autocommit": True}
        answer = self._probes[alias].submit(functools.partial(self._ask, alias, params))
        try:
            in_recovery, lag_seconds, replay_lsn, took = answer.result(timeout=timeout)
        except (psycopg.Error, FutureTimeout) as error:
            # This thread's pooled connection to it is likely broken or stuck too.
            connections[alias].close()
            reason = f"no answer within {timeout:g}s" if isinstance(error, FutureTimeout) else _first_line(error)
            status = ReplicaStatus(alias, False, now, error=reason)
        else:
            if not in_recovery:
                # Not a standby (a development URL pointing at the primary): no lag.
                status = ReplicaStatus(alias, True, now, 0.0, 0, reachable=True)
            elif (current := primary_health.lag_position(primary)) is None:
                # Its primary is away: the replica is the newest copy there is (read-only mode).
                status = ReplicaStatus(
                    alias, True, now, float(lag_seconds or 0.0), None, replay_lsn=replay_lsn, reachable=True
                )
            else:
                lag_bytes = max(0, current - replay_lsn)
                lag_seconds = float(lag_seconds or 0.0)
                healthy = (
                    lag_bytes <= settings.HERD_REPLICA_MAX_LAG_BYTES
                    or lag_seconds <= settings.HERD_REPLICA_MAX_LAG_SECONDS
                )
                # Slow to answer (a slow link, an overloaded server): every read sent to
                # it would pay that on each round trip, where the primary answers at once.
                slow = took > settings.HERD_REPLICA_SLOW_SECONDS
                error = f"answered in {took * 1000:.0f} ms (slow)" if slow else ""
                status = ReplicaStatus(
                    alias,
                    healthy and not slow,
                    now,
                    lag_seconds,
                    lag_bytes,
                    error=error,
                    replay_lsn=replay_lsn,
                    reachable=True,
                )
        with self._lock:
            self._statuses[alias] = status
        return status

    def _ask(self, alias: str, params: dict) -> tuple[bool, float | None, int, float]:
        """On ``alias``'s probe thread: recovery, replay lag, replayed position and how long
        the query took (not the connect), on the probe's own connection (kept between
        checks; a new one once it fails or the alias' parameters change)."""
        row, took = _on_kept_connection(self._probe_connections, alias, params, _REPLICA_STATE)
        if not row[0]:
            # A primary answered: a replica listener's fallback while no replica is up, or a
            # replica promoted under it (HAProxy under Patroni keeps such sessions). The next
            # check connects anew, to the server the listener picks then, not to it for good.
            self._probe_connections.pop(alias)[1].close()
        return bool(row[0]), row[1], int(row[2]), took


replica_health = ReplicaHealth()


def _on_kept_connection(kept: dict, alias: str, params: dict, sql: str) -> tuple[tuple, float]:
    """``sql``'s row on ``alias``'s probe connection in ``kept`` (a new one once the kept one
    fails or the alias' parameters change), and how long the query took (not the connect)."""
    kept_params, connection = kept.pop(alias, (None, None))
    if connection is not None and kept_params != params:
        connection.close()
        connection = None
    for attempt in ("kept", "new") if connection is not None else ("new",):
        if attempt == "new":
            connection = psycopg.connect(**params)
        try:
            started = time.monotonic()
            row = connection.execute(sql).fetchone()
            took = time.monotonic() - started
        except psycopg.Error:
            connection.close()
            if attempt == "new":
                raise
            continue  # a kept connection may only have gone stale (a restarted server)
        kept[alias] = (params, connection)
        return row, took
    raise AssertionError("unreachable")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class PrimaryHealth:
    """Process-wide: which primaries were found unreachable, and when.

    Nothing is asked while a primary works but its position for the replicas' lag
    (``lag_position``): it is marked down when a connection to it fails (``mark_down``,
    ``position``, ``unreachable``) or that question goes unanswered, and asked again, with a
    connection of its own, at most every ``HERD_REPLICA_CHECK_INTERVAL`` seconds after that.
    Every question has a deadline on a thread of its own (``scaling.deadline``): a primary
    cut off (connections accepted, never answered) never hangs a request or readiness.
    """

    def __init__(self) -> None:
        self._down: dict[str, tuple[float, str]] = {}  # alias -> (checked at, error)
        self._lock = threading.Lock()
        self._probes = Workers("primary-check")
        # Used by each alias' position thread only; kept with the parameters it was made with.
        self._probe_connections: dict[str, tuple[dict, psycopg.Connection]] = {}

    def is_up(self, alias: str = PRIMARY) -> bool:
        """Whether ``alias`` is not marked down. Once its interval has passed, one marked down
        is asked again in the background: down until that check answers (no caller waits)."""
        down = self._down.get(alias)
        if down is None:
            return True
        if time.monotonic() - down[0] >= settings.HERD_REPLICA_CHECK_INTERVAL:
            self._probes[f"{alias}:check"].submit(functools.partial(self._check_now, alias))
        return False

    def down(self) -> dict[str, str]:
        """The primaries marked down now, with the error that took each out (no check)."""
        return {alias: error for alias, (_, error) in self._down.items()}

    def mark_down(self, alias: str, error: str = "connection failed") -> None:
        """Take ``alias`` out until its next check; its connection in this thread is closed."""
        with self._lock:
            self._down[alias] = (time.monotonic(), error)
        connections[alias].close()

    def cut_off(self, alias: str, error: str) -> None:
        """``alias`` did not answer in time (hung, partitioned): every primary database its
        server holds is marked down (a shard's beside the main one's), so none is asked in turn;
        statements stuck on them are then broken (``scaling.db.stuck``)."""
        server = _server(alias)
        for other in primary_aliases():
            if other == alias or _server(other) == server:
                self.mark_down(other, error)

    def mark_up(self, alias: str) -> None:
        with self._lock:
            self._down.pop(alias, None)

    def check(self, alias: str) -> bool:
        """Whether ``alias`` answers a new connection now (whatever state this thread's
        connection is in) within twice ``HERD_REPLICA_CHECK_TIMEOUT``; remembered."""
        deadline = 2 * settings.HERD_REPLICA_CHECK_TIMEOUT
        try:
            return self._probes[f"{alias}:check"].submit(functools.partial(self._check_now, alias)).result(deadline)
        except FutureTimeout:
            self.cut_off(alias, f"no answer within {deadline:g}s")
            return False

    def _check_now(self, alias: str) -> bool:
        params = {**connections[alias].get_connection_params(), "autocommit": True}
        try:
            with psycopg.connect(**params) as probe:
                probe.execute("SELECT 1")
        except psycopg.Error as error:
            self.mark_down(alias, _first_line(error))
            return False
        self.mark_up(alias)
        return True

    def lag_position(self, alias: str = PRIMARY) -> int | None:
        """The primary's position for measuring a replica's lag, or None while it is away:
        asked on a connection and a thread of its own for at most ``HERD_REPLICA_CHECK_TIMEOUT``;
        a primary that does not answer in time is marked down (a partition, a hung server)."""
        if not self.is_up(alias):
            return None
        params = {**connections[alias].get_connection_params(), "autocommit": True}
        timeout = settings.HERD_REPLICA_CHECK_TIMEOUT
        answer = self._probes[f"{alias}:position"].submit(functools.partial(self._ask_position, alias, params))
        try:
            return answer.result(timeout=timeout)
        except FutureTimeout:
            self.cut_off(alias, f"no answer within {timeout:g}s")
        except psycopg.Error as error:
            self.mark_down(alias, _first_line(error))
        return None

    def close(self) -> None:
        """Close the kept position connections (before their database is dropped: the tests)."""
        while self._probe_connections:
            _, (_, connection) = self._probe_connections.popitem()
            connection.close()

    def _ask_position(self, alias: str, params: dict) -> int:
        row, _ = _on_kept_connection(self._probe_connections, alias, params, _CURRENT_POSITION)
        return int(row[0])

    def failed(self, alias: str) -> bool:
        """After a connection error on ``alias``: close this thread's connection and ask the
        server; True (marked down) when it does not answer, False when only the connection
        had gone stale (the next query opens a new one). One already marked down is not asked
        again here (``is_up`` re-checks it): its statements were broken for it (``scaling.db.stuck``)."""
        connections[alias].close()
        return not self.is_up(alias) or not self.check(alias)

    def standing_by(self) -> list[str]:
        """The primaries whose connection in this thread reached a hot standby (PostgreSQL
        tells its clients ``in_hot_standby``, and again once promoted): its address answers,
        its writes fail (``cannot execute ... in a read-only transaction``) until a failover
        completes. Those connections are closed: the next request connects afresh."""
        found = []
        for alias in primary_aliases():
            raw = connections[alias].connection
            if raw is not None and not raw.closed and raw.info.parameter_status("in_hot_standby") == "on":
                found.append(alias)
                connections[alias].close()
        return found

    def unreachable(self) -> list[str]:
        """The primaries that do not answer: those marked down, and any other that fails a
        connection attempt now. For after a connection error: which server was it?"""
        down = []
        for alias in primary_aliases():
            if alias in self._down:
                # Asked again only once its interval has passed (without waiting: ``is_up``).
                self.is_up(alias)
                if alias in self._down:
                    down.append(alias)
            elif not self.check(alias):
                down.append(alias)
        return down

    def position(self, alias: str = PRIMARY) -> int | None:
        """``positions.current(alias)``, or None when the primary is unreachable (marked down),
        or its address reaches a standby (a failover's instant: "recovery is in progress")."""
        if not self.is_up(alias):
            return None
        try:
            return positions.current(alias)
        except CONNECTION_ERRORS:
            if self.failed(alias):
                return None
        try:
            return positions.current(alias)
        except CONNECTION_ERRORS:
            return None


primary_health = PrimaryHealth()


def _server(alias: str) -> tuple[str, str]:
    database = settings.DATABASES[alias]
    return (str(database.get("HOST", "")), str(database.get("PORT", "")))


def _all_replicas() -> list[str]:
    """The main database's replicas and the shards' (``SHARD_REPLICAS``)."""
    shard_replicas = getattr(settings, "SHARD_REPLICAS", {})
    return [*replica_aliases(), *(alias for alias in shard_replicas.values() if alias)]
