"""A primary lost under Patroni (deploy/herd/patroni.py), in short: nothing acknowledged lost.

Brings up the test profile's Patroni cluster beside the suite's plain PostgreSQL, on ports
of its own (``Profile.postgres_ports`` and the Patroni ports, reserved with every profile's):
three etcd members, two PostgreSQL members in ``synchronous_mode``, HAProxy routing by
Patroni's REST API. Writes a row through HAProxy's primary listener and keeps its WAL
position (as ``scaling/db/positions.py`` reads one), SIGKILLs the primary's Patroni and
postmaster, then polls: a write through the same listener succeeds again (the standby
promoted), the row is there, the new primary's position is past the stored one on a new
timeline (a position stored before the failover stays comparable), and the lost member,
started again, rejoins as a replica (pg_rewind) that has replayed the stored position. And a
connection the replica listener sent to the primary while no replica was up is closed once
one is.
"""

import uuid

import psycopg
import pytest

from deploy.herd.patroni import TTL, PatroniCluster, elapsed_until
from deploy.herd.profiles import PROFILES

# Under a minute (Patroni's leader key lives TTL seconds): in `make test`, and alone in
# `make test-failover` (docs/RELIABILITY.md).
pytestmark = pytest.mark.patroni

# The WAL position as an int, as scaling/db/positions.py reads it.
INSERT_POSITION = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
REPLAYED_POSITION = "SELECT COALESCE(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint, 0)"
# Polling bounds, not timings: the leader key outlives the lost primary TTL seconds.
FAILOVER_WITHIN = TTL + 40
REJOIN_WITHIN = 90


@pytest.fixture(scope="module")
def cluster():
    cluster = PatroniCluster(PROFILES["test"].with_postgres("patroni"))
    cluster.ensure()
    yield cluster
    cluster.stop()


def connect(port: int) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1", port=port, user="herd", dbname="postgres", connect_timeout=3, autocommit=True
    )


def value(port: int, query: str, *params):
    try:
        with connect(port) as conn:
            row = conn.execute(query, params).fetchone()
            return row[0] if row else None
    except psycopg.Error:
        return None


def write(port: int, text: str) -> int | None:
    """Insert ``text`` (acknowledged once this returns), and the primary's position after it."""
    try:
        with connect(port) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS failover_probe (text text PRIMARY KEY)")
            conn.execute("INSERT INTO failover_probe VALUES (%s)", (text,))
            return conn.execute(INSERT_POSITION).fetchone()[0]
    except psycopg.Error:
        return None


def test_a_lost_primary_is_replaced_by_its_synchronous_standby_and_rejoins_as_a_replica(cluster):
    primary_port, replica_port = cluster.proxy.port, cluster.proxy.replica_port
    old = cluster.primary()
    standby = cluster.synchronous_standby()
    assert old is not None and standby is not None and standby is not old
    timeline = old.timeline()
    # Every connection through the primary listener reaches the primary (HAProxy balances
    # round robin over the members it thinks fit: a wrong check would show here).
    assert [value(primary_port, "SELECT pg_is_in_recovery()") for _ in range(4)] == [False] * 4
    before = f"before {uuid.uuid4()}"
    stored = write(primary_port, before)
    assert stored is not None

    old.kill()

    after = f"after {uuid.uuid4()}"
    assert elapsed_until(lambda: write(primary_port, after) is not None, FAILOVER_WITHIN) is not None
    assert cluster.primary() is standby
    assert standby.timeline() > timeline
    # The acknowledged row survived; a position stored before is reached on the new timeline.
    assert value(primary_port, "SELECT count(*) FROM failover_probe WHERE text = %s", before) == 1
    assert value(primary_port, "SELECT pg_is_in_recovery()") is False
    assert value(primary_port, INSERT_POSITION) > stored

    old.launch()  # as its supervisor would: Patroni rewinds it and follows the new primary
    # Patroni reports the role ``replica`` as soon as its server runs in recovery, before it
    # has followed the new primary onto its timeline: wait for both.
    new_timeline = standby.timeline()
    assert elapsed_until(lambda: old.role() == "replica" and old.timeline() == new_timeline, REJOIN_WITHIN) is not None
    assert elapsed_until(lambda: (value(old.port, REPLAYED_POSITION) or 0) >= stored, REJOIN_WITHIN) is not None
    assert value(old.port, "SELECT count(*) FROM failover_probe WHERE text IN (%s, %s)", before, after) == 2
    # HAProxy's replica listener sends reads to it again (a replica up: not the primary).
    assert elapsed_until(lambda: value(replica_port, "SELECT pg_is_in_recovery()") is True, REJOIN_WITHIN) is not None


def test_a_connection_the_replica_listener_sent_to_the_primary_is_closed_once_a_replica_is_up(cluster):
    """With no replica up, HAProxy's replica listener sends connections to the primary (its
    fallback); once a replica is up again it closes them (``on-marked-up
    shutdown-backup-sessions``): a kept connection (the app's pool, its replica check) would
    otherwise read the primary for good, and a lagging replica would never be seen lagging."""
    replica_port = cluster.proxy.replica_port
    cluster.wait_ready(REJOIN_WITHIN)
    replica = cluster.synchronous_standby()
    replica.stop()
    assert elapsed_until(lambda: value(replica_port, "SELECT pg_is_in_recovery()") is False, 30) is not None
    kept = connect(replica_port)
    assert kept.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False

    replica.launch()
    assert elapsed_until(lambda: value(replica_port, "SELECT pg_is_in_recovery()") is True, REJOIN_WITHIN) is not None

    def closed() -> bool:
        try:
            kept.execute("SELECT 1")
        except psycopg.Error:
            return True
        return False

    assert elapsed_until(closed, 5) is not None, "a connection the fallback took still reads the primary"
    kept.close()
