"""The router on the real primary and its real streaming replica."""

import psycopg
import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from deploy.faults import Faults
from deploy.herd.profiles import PROFILES
from deploy.herd.services import Postgres
from scaling.db import positions
from scaling.db.replicas import replica_health
from scaling.db.router import PrimaryReplicaRouter

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True)
def fresh_replica_health():
    """Each test starts and ends with a current view of the replicas."""
    replica_health.check("replica1")
    yield
    replica_health.check("replica1")


def test_writes_go_to_the_primary():
    assert PrimaryReplicaRouter().db_for_write(User) == "default"


def test_reads_outside_a_transaction_run_on_the_replica_and_see_replicated_rows(wait_for_replicas):
    User.objects.create(username="alice")
    wait_for_replicas()
    with (
        CaptureQueriesContext(connections["default"]) as on_primary,
        CaptureQueriesContext(connections["replica1"]) as on_replica,
    ):
        assert User.objects.filter(username="alice").exists()
    assert len(on_replica) == 1
    assert not any("accounts_user" in query["sql"] for query in on_primary.captured_queries)


def test_reads_inside_a_transaction_run_on_the_primary_and_see_uncommitted_rows():
    with transaction.atomic():
        User.objects.create(username="bob")
        with CaptureQueriesContext(connections["replica1"]) as on_replica:
            assert User.objects.filter(username="bob").exists()
        assert len(on_replica) == 0


def test_replica_connections_refuse_writes():
    with connections["replica1"].cursor() as cursor:
        cursor.execute("SHOW default_transaction_read_only")
        assert cursor.fetchone()[0] == "on"


def test_reads_fall_back_to_the_primary_while_the_replica_is_down_and_return_after():
    replica = Postgres(PROFILES["test"], replica=True)
    User.objects.create(username="carol")
    replica.stop()
    try:
        connections["replica1"].close()
        assert not replica_health.check("replica1").healthy
        assert PrimaryReplicaRouter().db_for_read(User) == "default"
        assert User.objects.filter(username="carol").exists()
    finally:
        replica.start()
    assert replica_health.check("replica1").healthy
    assert PrimaryReplicaRouter().db_for_read(User) == "replica1"


def test_a_replica_lagging_by_time_but_not_by_bytes_stays_in(settings):
    settings.HERD_REPLICA_MAX_LAG_SECONDS = -1
    assert replica_health.check("replica1").healthy


def test_a_replica_lagging_by_both_time_and_bytes_is_taken_out(settings):
    settings.HERD_REPLICA_MAX_LAG_SECONDS = -1
    settings.HERD_REPLICA_MAX_LAG_BYTES = -1
    assert not replica_health.check("replica1").healthy
    assert PrimaryReplicaRouter().db_for_read(User) == "default"


def test_a_commit_moves_the_primary_position_and_the_replica_replays_it(wait_for_replicas):
    before = positions.current()
    User.objects.create(username="moved")
    after = positions.current()
    assert after > before
    wait_for_replicas()
    assert positions.replayed("replica1") >= after


def test_a_replica_that_answers_slowly_is_taken_out_until_it_answers_promptly(settings):
    """Through the drills' fault proxy (``deploy.faults``): the real replica, each answer
    held a little past ``HERD_REPLICA_SLOW_SECONDS``, replaying in time."""
    faults = Faults(PROFILES["test"], ("postgres-replica",))
    replica = connections["replica1"]
    port = replica.settings_dict["PORT"]
    replica.close()
    replica.settings_dict["PORT"] = faults.proxies["postgres-replica"].port
    try:
        assert replica_health.check("replica1").healthy  # through the proxy, passing
        with faults.injected("postgres-replica", "delay", 1000 * settings.HERD_REPLICA_SLOW_SECONDS + 50):
            status = replica_health.check("replica1")
            assert not status.healthy and "slow" in status.error, status
            assert PrimaryReplicaRouter().db_for_read(User) == "default"
        assert replica_health.check("replica1").healthy
        assert PrimaryReplicaRouter().db_for_read(User) == "replica1"
    finally:
        replica.close()
        replica.settings_dict["PORT"] = port
        replica_health.check("replica1")  # its probe connection renewed, to the replica itself
        faults.close()


def test_a_replica_url_that_answered_as_a_primary_reaches_the_replica_once_it_is_back():
    """HAProxy's replica listener under Patroni sends new connections to the primary while no
    replica is up, and keeps them there after: the health check, on a connection it keeps,
    must not stay on the primary (never lagging) once the replica is back. Here the drills'
    fault proxy stands for the listener: new connections to the primary, then the replica."""
    faults = Faults(PROFILES["test"], ("postgres-replica",))
    proxy = faults.proxies["postgres-replica"]
    replica = connections["replica1"]
    port = replica.settings_dict["PORT"]
    replica.close()
    replica.settings_dict["PORT"] = proxy.port
    try:
        proxy.upstream_port = int(connections["default"].settings_dict["PORT"])  # no replica up
        assert replica_health.check("replica1").replay_lsn == 0  # answered as a primary
        proxy.upstream_port = int(port)  # the replica back
        assert replica_health.check("replica1").replay_lsn > 0, "the check still asks the primary"
    finally:
        replica.close()
        replica.settings_dict["PORT"] = port
        replica_health.check("replica1")
        faults.close()


def test_at_the_instant_the_primary_fails_a_replica_last_found_lagging_serves_the_rerun_get(
    settings, wait_for_replicas
):
    """Read-only mode at a failover's first instant (docs/READS.md): the replica's last check,
    made while the primary still answered, found it lagging (thresholds below any lag, as a
    synchronous standby under load is often just past the drills' 1 s and 64 kB). Then the
    primary refuses connections (the drills' fault proxy) under a logged-in GET that reads it:
    the view runs again on that replica (200), not on the primary again (the 503 page); and a
    list page's query cache compiles its SQL without the primary."""
    from django.test import Client

    from accounts.tests.factories import make_user
    from scaling.db.replicas import primary_health

    settings.HERD_REPLICA_CHECK_INTERVAL = 60  # the lagging verdict stays the last one
    faults = Faults(PROFILES["test"], ("postgres-primary",))
    primary = connections["default"]
    port = primary.settings_dict["PORT"]
    client = Client(raise_request_exception=False)
    client.force_login(make_user("reader"))
    wait_for_replicas()  # the user is on the replica that will stand in
    primary.close()
    primary.settings_dict["PORT"] = faults.proxies["postgres-primary"].port
    try:
        lag = settings.HERD_REPLICA_MAX_LAG_BYTES, settings.HERD_REPLICA_MAX_LAG_SECONDS
        settings.HERD_REPLICA_MAX_LAG_BYTES = settings.HERD_REPLICA_MAX_LAG_SECONDS = -1
        status = replica_health.check("replica1")
        settings.HERD_REPLICA_MAX_LAG_BYTES, settings.HERD_REPLICA_MAX_LAG_SECONDS = lag  # the shards' as usual
        assert not status.healthy and status.reachable, status
        with faults.injected("postgres-primary", "refuse"):
            response = client.get("/accounts/profile/")
            assert response.status_code == 200, response.content[:300]
            assert 'data-username="reader"' in response.content.decode()
            assert "default" in primary_health.down()
            # A thread's connection that never connected has no server version yet, and the
            # query cache compiles its key's SQL before it reads: not on the primary then.
            primary.__dict__.pop("pg_version", None)
            listing = client.get("/products/")
            assert listing.status_code == 200, listing.content[:300]
            # A replica whose last check failed (a timeout at that instant) is asked again.
            replica_health.mark_down("replica1", "no answer within 0.5s")
            again = client.get("/accounts/profile/")
            assert again.status_code == 200, again.content[:300]
            # This thread's connection to the stand-in dies under the GET (it was on the server
            # just lost, checked already in this request): the re-run opens a new one.
            replica = connections["replica1"]
            replica.ensure_connection()
            replica.health_check_done = True
            with psycopg.connect(**{**replica.get_connection_params(), "autocommit": True}) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (replica.connection.info.backend_pid,))
            third = client.get("/accounts/profile/")
            assert third.status_code == 200, third.content[:300]
    finally:
        primary.close()
        primary.settings_dict["PORT"] = port
        primary_health.mark_up("default")
        faults.close()
        for replica in settings.SHARD_REPLICAS.values():  # later tests check them afresh
            replica_health._statuses.pop(replica, None)


def test_a_replica_failing_takes_out_the_other_databases_its_server_holds(settings):
    """The main replica and each shard's are databases of one server: a query failing on one
    takes the others out too, so the next read does not try the same dead server first."""
    shard, shard_replica = next(iter(settings.SHARD_REPLICAS.items()))
    assert replica_health.check("replica1").healthy and replica_health.check(shard_replica, shard).healthy
    replica_health.mark_down("replica1")
    try:
        assert not replica_health.is_healthy(shard_replica, shard)
    finally:
        replica_health.check("replica1")
        replica_health.check(shard_replica, shard)
