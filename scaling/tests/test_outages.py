"""Each data service stopped for real: its process, not a patched client.

The state Redis, the cache Redis and the PostgreSQL replica and primary of the test
profile (``deploy.herd``) are stopped while pages are asked for through Django's full
stack, then started again; each test leaves its service answering (the replicas caught up).
The patched-client tests beside these (``test_sessions.py``, ``test_consistency.py``)
pin the details; these prove the claims of docs/RELIABILITY.md on the real thing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket as sockets
import threading
import time
from decimal import Decimal

import psycopg
import pytest
from django.conf import settings
from django.db import InternalError, close_old_connections, connections
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from accounts.tests.factories import PASSWORD, make_user
from catalog import services as catalog_services
from catalog.models import Review
from deploy.herd.profiles import PROFILES
from deploy.herd.services import Postgres, Redis
from notifications import services as notification_services
from notifications.consumers import CLOSE_TRY_AGAIN
from notifications.tests.test_socket import scenario, socket
from scaling.db import consistency, positions
from scaling.db.replicas import primary_aliases, primary_health, replica_health
from scaling.ops import health
from scaling.web.views import server_error

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

USERNAME = re.compile(r'data-username="([^"]+)"')


@pytest.fixture
def products(wait_for_replicas):
    category = catalog_services.create_category(name="Outages", slug="outages")
    made = [
        catalog_services.create_product(
            category=category, name=f"Lamp {n}", slug=f"lamp-{n}", price=Decimal("12.00"), stock=3
        )
        for n in range(3)
    ]
    wait_for_replicas()
    return made


@pytest.fixture
def shopper(products, wait_for_replicas) -> Client:
    """A visitor logged in through the log-in form (the session is in the state Redis)."""
    make_user("shopper")
    wait_for_replicas()
    client = Client(raise_request_exception=False)
    assert client.post("/accounts/login/", {"username": "shopper", "password": PASSWORD}).status_code == 302
    return client


def logged_in_as(client: Client) -> str | None:
    response = client.get("/accounts/profile/")
    match = USERNAME.search(response.content.decode()) if response.status_code == 200 else None
    return match.group(1) if match else None


def catalog_paths(products) -> list[str]:
    return ["/", "/products/", f"/c/{products[0].category.slug}/", *(f"/p/{p.slug}/" for p in products)]


# --------------------------------------------------------------------------- session Redis


def test_with_the_session_redis_stopped_a_logged_in_page_is_the_clean_503_and_once_back_nobody_is_logged_out(
    shopper, products, stopped
):
    anonymous = Client(raise_request_exception=False)
    with stopped(Redis(PROFILES["test"], "state")):
        page = shopper.get("/accounts/profile/")
        review = shopper.post(f"/p/{products[0].slug}/review/", {"rating": 4, "text": "Sent while down."})
        anonymous_pages = {path: anonymous.get(path).status_code for path in catalog_paths(products)}
    for response in (page, review):
        assert response.status_code == 503
        assert response["Retry-After"] == "5"
        assert response["Cache-Control"] == "no-store"
        body = response.content.decode()
        assert "Nothing you saved is lost" in body
        assert "Traceback" not in body and "Error" not in body and "refused" not in body
    assert not Review.objects.using("default").filter(text="Sent while down.").exists()
    assert set(anonymous_pages.values()) == {200}, anonymous_pages  # no session, no need for the store
    assert logged_in_as(shopper) == "shopper"  # its append-only file kept the session


def test_a_socket_open_when_the_session_redis_stops_is_told_to_reconnect_not_that_its_session_ended(shopper, stopped):
    async def body():
        communicator = socket(shopper)
        assert (await communicator.connect())[0]
        with stopped(Redis(PROFILES["test"], "state")):
            await communicator.send_to(text_data="ping")  # the consumer checks the session again
            closed = await communicator.receive_output(timeout=10)
        assert closed == {"type": "websocket.close", "code": CLOSE_TRY_AGAIN}

    scenario(body)


# --------------------------------------------------------------------------- cache Redis


def test_with_the_cache_redis_stopped_every_page_answers_and_writes_are_saved(
    shopper, products, stopped, wait_for_replicas
):
    anonymous = Client(raise_request_exception=False)
    with stopped(Redis(PROFILES["test"], "cache")):
        for path in catalog_paths(products):
            response = anonymous.get(path)
            assert response.status_code == 200, (path, response.content[:300])
        assert logged_in_as(shopper) == "shopper"
        saved = shopper.post(f"/p/{products[1].slug}/review/", {"rating": 5, "text": "Written without a cache."})
        assert saved.status_code == 302
        assert "Written without a cache." in shopper.get(f"/p/{products[1].slug}/").content.decode()
        assert anonymous.get("/readyz").status_code == 200  # not required for readiness
    assert Review.objects.using("default").filter(text="Written without a cache.").exists()
    # Anonymous reads come from a replica, bypassing the cache until this process's breaker
    # lets a call through again: once it has replayed the review, every page shows it.
    wait_for_replicas()
    for path in catalog_paths(products):
        assert anonymous.get(path).status_code == 200, path
    assert "Written without a cache." in anonymous.get(f"/p/{products[1].slug}/").content.decode()


# --------------------------------------------------------------------------- PostgreSQL replica


def test_a_write_made_the_moment_a_replica_stops_is_saved_its_reads_are_on_the_primary(
    shopper, products, stopped, wait_for_replicas
):
    wait_for_replicas()  # the shopper's log-in replayed: nothing sends its reads to the primary
    assert replica_health.check("replica1").healthy
    with stopped(Postgres(PROFILES["test"], replica=True)):
        # The last check, moments ago, said healthy: a read routed by it would fail.
        assert "replica1" in replica_health.healthy_aliases()
        saved = shopper.post(f"/p/{products[1].slug}/review/", {"rating": 4, "text": "Written as it stopped."})
        assert saved.status_code == 302
    assert Review.objects.using("default").filter(text="Written as it stopped.").exists()


def test_a_replica_stopped_under_a_get_is_taken_out_and_the_view_run_again_on_the_primary(
    shopper, products, stopped, caplog
):
    anonymous = Client(raise_request_exception=False)
    assert replica_health.check("replica1").healthy
    connections["replica1"].ensure_connection()  # a pooled connection, as a replica keeps
    with stopped(Postgres(PROFILES["test"], replica=True)):
        # The last check, moments ago, said healthy: the first GET is routed to the replica.
        assert "replica1" in replica_health.healthy_aliases()
        with caplog.at_level(logging.WARNING, logger="scaling.db.consistency"):
            first = anonymous.get(f"/p/{products[0].slug}/")
        assert first.status_code == 200
        assert "replica replica1 failed during" in caplog.text
        assert "replica1" not in replica_health.healthy_aliases()
        # No healthy replica: every read goes to the primary, logged in or not, never an error,
        # and no request tries the replica first.
        caplog.clear()
        with CaptureQueriesContext(connections["default"]) as on_primary, caplog.at_level(logging.WARNING):
            for client in (anonymous, shopper):
                for path in catalog_paths(products):
                    assert client.get(f"{path}?fresh=1").status_code == 200, path
        assert any("catalog_product" in query["sql"] for query in on_primary.captured_queries)
        assert "failed during" not in caplog.text
        assert logged_in_as(shopper) == "shopper"
        saved = shopper.post(f"/p/{products[2].slug}/review/", {"rating": 3, "text": "Written without a replica."})
        assert saved.status_code == 302
        assert anonymous.get("/readyz").status_code == 200  # readiness ignores replicas
    assert replica_health.check("replica1").healthy
    assert "Written without a replica." in anonymous.get(f"/p/{products[2].slug}/").content.decode()


def test_a_hung_replica_leaves_readiness_answering_and_reads_go_to_the_primary(products, frozen):
    """The replica-partition drill's defect: a replica that accepts connections and never
    answers (SIGSTOPped with its backends) took every health check down with it."""
    anonymous = Client(raise_request_exception=False)
    assert replica_health.check("replica1").healthy
    connections["replica1"].ensure_connection()  # a pooled connection, as a replica keeps
    with frozen(Postgres(PROFILES["test"], replica=True)) as freeze:
        ready = anonymous.get("/readyz")
        assert not freeze.thawed_early.is_set(), "/readyz hung on the frozen replica"
        assert ready.status_code == 200, ready.content
        checks = ready.json()["checks"]
        assert checks["database:replica1"].startswith("error: no answer"), checks
        assert checks["database:default"] == "ok"
        # Marked down by that check: every read goes to the primary, never to the replica.
        assert "replica1" not in replica_health.healthy_aliases()
        with CaptureQueriesContext(connections["default"]) as on_primary:
            for path in catalog_paths(products):
                assert anonymous.get(f"{path}?fresh=1").status_code == 200, path
        assert not freeze.thawed_early.is_set(), "a page hung on the frozen replica"
        assert any("catalog_product" in query["sql"] for query in on_primary.captured_queries)
        # Asked again while the first question is still unanswered: answered, not piled up.
        assert anonymous.get("/readyz").status_code == 200
        assert not freeze.thawed_early.is_set()
    assert replica_health.check("replica1").healthy


# --------------------------------------------------------------------------- PostgreSQL primary


def test_with_the_primary_stopped_the_site_reads_from_the_replica_and_writes_get_the_clean_503(
    shopper, products, stopped, wait_for_replicas, replica_delay
):
    anonymous = Client(raise_request_exception=False)
    notification_services.notify(User.objects.get(username="shopper").pk, title="Sent before the outage")
    wait_for_replicas()  # the shopper's log-in (last_login) is on the replica too
    for shard, replica in settings.SHARD_REPLICAS.items():
        wait_for_replicas(aliases=[replica], primary=shard)  # and their notification
    # The shopper's last write is one the replica has not replayed when the primary stops:
    # their reads would wait for it on the primary; in read-only mode they go to the replica.
    replica_delay("1h")
    last = shopper.post(f"/p/{products[1].slug}/review/", {"rating": 5, "text": "Written just before."})
    assert last.status_code == 302
    with stopped(Postgres(PROFILES["test"], replica=False)):
        for client in (anonymous, shopper):
            for path in catalog_paths(products):
                response = client.get(f"{path}?fresh=1")
                assert response.status_code == 200, (path, response.content[:300])
        assert logged_in_as(shopper) == "shopper"
        jobs = shopper.get("/jobs/")  # the jobs (a shard), and the unread badge (a shard) in the header
        assert jobs.status_code == 200, jobs.content[:300]
        assert "data-unread-count>1<" in jobs.content.decode()
        refused = shopper.post(f"/p/{products[0].slug}/review/", {"rating": 4, "text": "Written while read-only."})
        assert refused.status_code == 503
        assert refused["Retry-After"]
        assert "your change was not saved" in refused.content.decode()
        assert "Traceback" not in refused.content.decode()
        assert "default" in primary_health.down()
        assert anonymous.get("/readyz").status_code == 200  # the replicas stay in the load balancer
        replica_delay("0")
    assert primary_health.down() == {}
    assert not Review.objects.using("default").filter(text="Written while read-only.").exists()
    assert "Written just before." in shopper.get(f"/p/{products[1].slug}/").content.decode()  # nothing lost
    saved = shopper.post(f"/p/{products[0].slug}/review/", {"rating": 4, "text": "Written once it is back."})
    assert saved.status_code == 302
    assert "Written once it is back." in shopper.get(f"/p/{products[0].slug}/").content.decode()


def test_with_the_primary_stopped_a_list_page_answers_on_a_thread_that_never_connected_to_it(products, stopped):
    """The db-primary-stop drill's defect: the query cache compiled its key's SQL for the
    primary, and a JSON function asks its server's version: a thread whose primary
    connection had never opened (a new server thread) failed every list page with a 503."""
    answers: list[int] = []

    def browse() -> None:  # a thread of its own: connections of its own, none opened yet
        client = Client(raise_request_exception=False)
        answers.extend(client.get(f"{path}?fresh=thread").status_code for path in ("/products/", "/products/?q=lamp"))

    with stopped(Postgres(PROFILES["test"], replica=False)):
        thread = threading.Thread(target=browse)
        thread.start()
        thread.join(30)
    assert answers == [200, 200]


def test_a_primary_cut_off_leaves_readiness_answering_and_the_site_read_only(products, frozen):
    """The db-primary-partition drill's defect: a primary that accepts connections and never
    answers (SIGSTOPped with its backends) hung the replicas' lag check, which asks it for its
    position, so every app replica's /readyz failed and HAProxy took them all out."""
    anonymous = Client(raise_request_exception=False)
    assert replica_health.check("replica1").healthy
    connections["default"].ensure_connection()  # a pooled connection, as a server thread keeps
    with frozen(Postgres(PROFILES["test"], replica=False)) as freeze:
        started = time.monotonic()
        ready = anonymous.get("/readyz")
        took = time.monotonic() - started
        assert not freeze.thawed_early.is_set(), "/readyz hung on the frozen primary"
        assert ready.status_code == 200, ready.content
        checks = ready.json()["checks"]
        assert checks["database:replica1"] == "ok", checks
        assert took < 2 * settings.HERD_READINESS_DEADLINE_SECONDS
        # Marked down by that check: reads go to the replica (read-only mode), none hangs.
        assert "default" in primary_health.down()
        for path in catalog_paths(products):
            assert anonymous.get(f"{path}?fresh=cut").status_code == 200, path
        assert not freeze.thawed_early.is_set(), "a page hung on the frozen primary"
    # The readiness threads' own connections, answered once thawed: closed on their threads.
    for alias in primary_aliases():
        health._checks[f"database:{alias}"].submit(connections.close_all).result(10)


def test_requests_whose_query_a_primary_cut_off_holds_end_within_seconds(shopper, products, frozen, replica_delay):
    """The db-primary-partition drill's open wait: a request whose pooled connection had sent
    its query to a primary just cut off waited until the partition healed (libpq has no read
    timeout). The statement watch (``scaling.db.stuck``) asks the primary, finds it gone and
    breaks those connections: the GET runs again on the replica, the write is the clean 503."""
    replica_delay("1h")  # the shopper's next write is not replayed: their reads need the primary
    assert shopper.post(f"/p/{products[0].slug}/review/", {"rating": 4, "text": "Before the cut."}).status_code == 302
    replica_health.check("replica1")  # fresh: no lag check (which would find the primary away) during the requests
    ready, go = threading.Barrier(2), threading.Event()
    answers: dict[str, tuple[int, float]] = {}

    def read_on_a_pooled_connection() -> None:
        connections["default"].ensure_connection()  # before the cut, as a server thread keeps it
        ready.wait()
        go.wait()
        # As each request starts in a server (the test client leaves it out): the pooled
        # connection's health check (a round trip outside Django's cursor) comes first.
        close_old_connections()
        started = time.monotonic()
        page = shopper.get(f"/p/{products[0].slug}/")
        answers["read"] = (page.status_code, time.monotonic() - started)
        connections.close_all()

    reader = threading.Thread(target=read_on_a_pooled_connection)
    reader.start()
    connections["default"].ensure_connection()
    ready.wait()
    try:
        with frozen(Postgres(PROFILES["test"], replica=False), at_most=12) as freeze:
            go.set()
            started = time.monotonic()
            refused = shopper.post(f"/p/{products[1].slug}/review/", {"rating": 2, "text": "During the cut."})
            answers["write"] = (refused.status_code, time.monotonic() - started)
            reader.join(15)
            replica_delay("0")  # the primary's thaw waits for the replica to catch up
            assert not freeze.thawed_early.is_set(), f"held until the primary thawed: {answers}"
    finally:
        go.set()
        reader.join(15)
        replica_delay("0")
    # The round trip's time, the watch's question, the health check's new connection (its
    # connect timeout), the read-only page's own question (``consistency._primary_back``).
    connect = settings.DATABASES["default"]["OPTIONS"]["connect_timeout"]
    bound = settings.HERD_PRIMARY_STATEMENT_SECONDS + 2 * (2 * settings.HERD_REPLICA_CHECK_TIMEOUT) + connect + 1.5
    assert answers["read"][0] == 200 and answers["read"][1] < bound, answers
    assert answers["write"][0] == 503 and answers["write"][1] < bound, answers
    assert refused["Retry-After"] and "your change was not saved" in refused.content.decode()
    assert not Review.objects.using("default").filter(text="During the cut.").exists()


@contextlib.contextmanager
def primary_address_reaching_the_standby():
    """The main database's address leads to the streaming replica for the block, as a
    failover's instant can (a standby not yet promoted behind the primary's address)."""
    primary, replica = settings.DATABASES["default"], settings.DATABASES["replica1"]
    kept = {"HOST": primary["HOST"], "PORT": primary["PORT"]}
    connections["default"].close()
    primary.update(HOST=replica["HOST"], PORT=replica["PORT"])
    try:
        yield
    finally:
        primary.update(kept)
        connections["default"].close()


def test_a_write_sent_to_a_standby_behind_the_primary_address_is_the_clean_503(shopper, products):
    """A write at the instant of a promotion met a standby (``cannot execute INSERT in a
    read-only transaction``, not a connection error, from a server that answers): a 500."""
    with primary_address_reaching_the_standby():
        refused = shopper.post(f"/p/{products[0].slug}/review/", {"rating": 3, "text": "Sent to the standby."})
    assert refused.status_code == 503, refused.content[:300]
    assert refused["Retry-After"] == "5"
    body = refused.content.decode()
    assert "your change was not saved" in body and "read-only transaction" not in body
    assert primary_health.down() == {}  # the address answers: nothing to mark down
    assert not Review.objects.using("default").filter(text="Sent to the standby.").exists()
    saved = shopper.post(f"/p/{products[0].slug}/review/", {"rating": 3, "text": "Sent once promoted."})
    assert saved.status_code == 302  # the next request reaches the primary on a new connection


def test_a_write_through_a_replica_alias_stays_a_500():
    """The same read-only error through a replica's alias is a stray write (a bug), not a
    failover's instant: not hidden behind the 503 page."""
    connections["default"].ensure_connection()  # the primary's connection open, on the primary
    try:
        with connections["replica1"].cursor() as cursor:
            cursor.execute("UPDATE catalog_product SET stock = stock")
    except InternalError:
        response = server_error(RequestFactory().post("/"))
    assert response.status_code == 500


def terminate_its_backend(connection) -> None:
    """The server ends the session (``terminating connection due to administrator command``)."""
    with psycopg.connect(**{**connection.get_connection_params(), "autocommit": True}) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [connection.connection.info.backend_pid])


def cut_its_socket(connection) -> None:
    """The path is cut under it (HAProxy ending a demoted primary's sessions): no SQLSTATE."""
    with sockets.socket(fileno=os.dup(connection.connection.pgconn.socket)) as sock:
        sock.shutdown(sockets.SHUT_RDWR)


@pytest.mark.parametrize("end_session", [terminate_its_backend, cut_its_socket])
def test_a_write_whose_session_ends_under_it_is_the_clean_503_though_the_primary_answers(
    shopper, products, end_session
):
    """A switchover's or a promotion's instant: the write's session ended under it, and by
    the time the error page asked, the primary's address answered again (the new primary):
    a 500, since ``server_error`` asked only whether the primary is unreachable now."""
    primary = connections["default"]

    def end_before_the_review(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "catalog_review"'):
            end_session(primary)
        return execute(sql, params, many, context)

    with primary.execute_wrapper(end_before_the_review):
        refused = shopper.post(f"/p/{products[0].slug}/review/", {"rating": 3, "text": "Sent as it ended."})
    assert refused.status_code == 503, refused.content[:300]
    assert refused["Retry-After"] == "5" and "your change was not saved" in refused.content.decode()
    assert primary_health.down() == {}
    assert not Review.objects.using("default").filter(text="Sent as it ended.").exists()


def test_a_write_saved_while_the_primary_is_still_marked_down_is_read_back_by_its_writer(
    shopper, products, replica_delay
):
    """The db-primary-stop drill's second defect: once the primary is back, a process sees it
    down until its next check; a write saved meanwhile stored no position for its writer
    (``primary_health.position`` said None), whose next page came from a replica that had not
    replayed it: their own review missing."""
    replica_delay("1h")
    writer = str(User.objects.get(username="shopper").pk)
    before = positions.current()
    primary_health.mark_down("default", "the test: as seen just before it came back")
    try:
        saved = shopper.post(f"/p/{products[2].slug}/review/", {"rating": 5, "text": "Written as it came back."})
        assert saved.status_code == 302
        # What any app replica's next request of theirs must reach (this process alone would
        # read the primary anyway: it remembers the tables it wrote).
        assert (consistency.stored_lsn(writer) or 0) > before
        primary_health.mark_up("default")
        assert "Written as it came back." in shopper.get(f"/p/{products[2].slug}/").content.decode()
    finally:
        primary_health.mark_up("default")
        replica_delay("0")


def test_a_writer_whose_position_the_stand_in_lacks_finds_the_primary_back(shopper, products, replica_delay):
    """The db-primary-stop drill's stale own reads: the primary back, one app replica saved a
    review on it, another still had it marked down and served the writer's next page from a
    replica that had not replayed the review. Read-only mode asks the primary again for a
    reader whose position the stand-in lacks (``consistency._primary_back``)."""
    replica_delay("1h")
    try:
        saved = shopper.post(f"/p/{products[1].slug}/review/", {"rating": 4, "text": "Saved on another replica."})
        assert saved.status_code == 302
        # This process, like an app replica that has not re-checked yet, has the primary down.
        primary_health.mark_down("default", "the test: as seen just before it came back")
        page = shopper.get(f"/p/{products[1].slug}/")
        assert page.status_code == 200
        assert "Saved on another replica." in page.content.decode()
        assert primary_health.is_up("default")
    finally:
        primary_health.mark_up("default")
        replica_delay("0")
