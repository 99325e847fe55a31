"""WAL positions, read in one place: a position is an int, bytes into PostgreSQL's WAL.

``current(alias)`` is what a reader must reach to see every commit so far on that primary;
``replayed(alias)`` is what a replica has applied. Read-your-writes, the caches, queued work
and shard moves compare the two; ``wait_until_replayed`` is for code outside requests (tests,
benchmarks) that reads its own writes back from the replicas.
"""

from __future__ import annotations

import time

from django.db import connections

# pg_lsn as a bigint: comparable in Python and in Redis' Lua.
_AS_INT = "pg_wal_lsn_diff({}, '0/0')::bigint"


def current(alias: str = "default") -> int:
    """A primary's WAL insert position now."""
    return _read(alias, _AS_INT.format("pg_current_wal_insert_lsn()"))


def replayed(alias: str) -> int:
    """What replica ``alias`` has replayed (0 before it replayed anything)."""
    return _read(alias, f"COALESCE({_AS_INT.format('pg_last_wal_replay_lsn()')}, 0)")


def _read(alias: str, expression: str) -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT {expression}")
        return int(cursor.fetchone()[0])


def wait_until_replayed(timeout: float = 40.0, aliases: list[str] | None = None, primary: str = "default") -> None:
    """Return once every replica (the main database's, unless ``aliases`` names others) has
    replayed the primary's commits so far; ``TimeoutError`` saying what a replica was doing
    if one has not after ``timeout``. The default outlasts ``max_standby_streaming_delay``
    (30 s), after which a replica query that blocks replay is cancelled."""
    from scaling.db.replicas import replica_aliases

    target = current(primary)
    deadline = time.monotonic() + timeout
    for alias in replica_aliases() if aliases is None else aliases:
        while replayed(alias) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{alias} did not replay {target} within {timeout:.0f}s: {replay_state(alias)}")
            time.sleep(0.01)
        connections[alias].close()


def replay_state(alias: str) -> list:
    """What the replica received and replayed, and its sessions that are not idle."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, pg_is_wal_replay_paused(),"
            " current_setting('recovery_min_apply_delay')"
        )
        state = [cursor.fetchone()]
        cursor.execute(
            "SELECT pid, application_name, state, wait_event_type, wait_event, left(query, 120)"
            " FROM pg_stat_activity WHERE state <> 'idle' AND pid <> pg_backend_pid()"
        )
        return state + cursor.fetchall()
