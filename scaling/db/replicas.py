"""Which read replicas may serve reads right now: reachable, and lagging little by time
*or* by bytes; checked at most every ``HERD_REPLICA_CHECK_INTERVAL`` seconds per process
(docs/READS.md).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connections

from scaling.db import positions

PRIMARY = "default"


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


class ReplicaHealth:
    """Process-wide, thread-safe cache of each replica's last health check."""

    def __init__(self) -> None:
        self._statuses: dict[str, ReplicaStatus] = {}
        self._lock = threading.Lock()

    def healthy_aliases(self) -> list[str]:
        return [alias for alias in replica_aliases() if self.is_healthy(alias)]

    def is_healthy(self, alias: str, primary: str = PRIMARY) -> bool:
        """Whether replica ``alias`` of ``primary`` may serve reads, checked at most every
        ``HERD_REPLICA_CHECK_INTERVAL`` seconds."""
        status = self._statuses.get(alias)
        if status is None or time.monotonic() - status.checked_at >= settings.HERD_REPLICA_CHECK_INTERVAL:
            status = self.check(alias, primary)
        return status.healthy

    def replayed_at_last_check(self, alias: str) -> int:
        """What ``alias`` had replayed when last checked (0 if unknown): a position at or
        below it needs no question to the replica."""
        status = self._statuses.get(alias)
        return status.replay_lsn if status is not None and status.healthy else 0

    def statuses(self) -> list[ReplicaStatus]:
        """The last check of each replica checked so far, without checking (``scaling.ops.metrics``)."""
        return [status for alias in replica_aliases() if (status := self._statuses.get(alias)) is not None]

    def mark_down(self, alias: str, error: str = "failed during a query") -> None:
        """Take a replica out until its next check (``HERD_REPLICA_CHECK_INTERVAL``)."""
        with self._lock:
            self._statuses[alias] = ReplicaStatus(alias, False, time.monotonic(), error=error)

    @staticmethod
    def spread(aliases: list[str]) -> list[str]:
        """The aliases in a random order, so requests spread over the replicas."""
        return random.sample(aliases, len(aliases))

    def check(self, alias: str, primary: str = PRIMARY) -> ReplicaStatus:
        """Measure one replica of ``primary`` now and remember the answer."""
        now = time.monotonic()
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute(
                    "SELECT pg_is_in_recovery(), EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())"
                )
                in_recovery, lag_seconds = cursor.fetchone()
            if not in_recovery:
                # Not a standby (a development URL pointing at the primary): no lag.
                status = ReplicaStatus(alias, True, now, 0.0, 0)
            else:
                replay_lsn = positions.replayed(alias)
                lag_bytes = max(0, positions.current(primary) - replay_lsn)
                lag_seconds = float(lag_seconds or 0.0)
                healthy = (
                    lag_bytes <= settings.HERD_REPLICA_MAX_LAG_BYTES
                    or lag_seconds <= settings.HERD_REPLICA_MAX_LAG_SECONDS
                )
                status = ReplicaStatus(alias, healthy, now, lag_seconds, lag_bytes, replay_lsn=replay_lsn)
        except DatabaseError as error:
            connections[alias].close()
            status = ReplicaStatus(alias, False, now, error=str(error).strip().splitlines()[0])
        with self._lock:
            self._statuses[alias] = status
        return status


replica_health = ReplicaHealth()
