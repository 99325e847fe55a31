"""Reads of sharded rows on the shard databases' streaming replicas, with read-your-writes
(scaling.sharding.shards.read_alias), on the real primary and replica: the test profile's shard
databases live on the primary's server, so the replica server streams them too."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db import connections
from django.test.utils import CaptureQueriesContext

from accounts.tests.factories import make_user
from notifications import selectors
from notifications import services as notifications
from scaling.db.replicas import replica_health
from scaling.sharding import shards

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


class ShardQueries:
    """The notification queries run on one shard database and on its replica."""

    def __init__(self, alias: str) -> None:
        self.alias, self.replica = alias, settings.SHARD_REPLICAS[alias]

    def __enter__(self):
        self.contexts = [CaptureQueriesContext(connections[a]) for a in (self.alias, self.replica)]
        for context in self.contexts:
            context.__enter__()
        return self

    def __exit__(self, *exc):
        for context in self.contexts:
            context.__exit__(*exc)

    def counts(self) -> tuple[int, int]:
        """(on the shard database, on its replica): queries of notification rows only."""
        return tuple(
            sum(1 for q in context.captured_queries if "notifications_notification" in q["sql"])
            for context in self.contexts
        )


@pytest.fixture
def two_users_on_one_database(wait_for_replicas):
    """Two users on different logical shards of the same shard database, each notified once."""
    first = make_user("reader0")
    alias = shards.alias_of_user(first.pk)
    for number in range(1, 64):
        second = make_user(f"reader{number}")
        if shards.alias_of_user(second.pk) == alias and shards.shard_of_user(second.pk) != shards.shard_of_user(
            first.pk
        ):
            break
    for user in (first, second):
        notifications.notify(user.pk, title="Welcome")
    wait_for_replicas()
    seen_healthy(settings.SHARD_REPLICAS[alias], alias)
    return alias, first, second


def seen_healthy(replica: str, primary: str, timeout: float = 10.0) -> None:
    """Until ``replica`` passes a health check: a check made on a loaded machine may find it
    slow (``HERD_REPLICA_SLOW_SECONDS``), and the test's reads follow the last verdict."""
    deadline = time.monotonic() + timeout
    while not replica_health.check(replica, primary).healthy:
        assert time.monotonic() < deadline, f"{replica} not healthy: {replica_health.check(replica, primary)}"
        time.sleep(0.05)


def test_a_users_notifications_are_read_on_the_shard_replica_once_it_has_replayed_them(two_users_on_one_database):
    alias, first, _second = two_users_on_one_database
    with ShardQueries(alias) as queries:
        assert selectors.unread_count(first.pk) == 1
    assert queries.counts() == (0, 1)


def test_a_user_reads_their_own_write_at_once_while_others_read_the_lagging_replica(
    two_users_on_one_database, replica_delay
):
    alias, writer, other = two_users_on_one_database
    replica_delay("3s")
    notifications.mark_all_read(writer)
    with ShardQueries(alias) as queries:
        assert selectors.unread_count(writer.pk) == 0  # their own write, at once: the shard database
        writer_counts = queries.counts()
    with ShardQueries(alias) as queries:
        assert selectors.unread_count(other.pk) == 1
    assert writer_counts == (1, 0)
    assert queries.counts() == (0, 1)  # another logical shard: the lagging replica serves it


def test_writes_never_go_to_the_replica_and_reads_in_a_writing_block_stay_on_the_shard(two_users_on_one_database):
    alias, user, _other = two_users_on_one_database
    with ShardQueries(alias) as queries:
        assert notifications.mark_all_read(user) == 1
    on_shard, on_replica = queries.counts()
    assert on_shard >= 1 and on_replica == 0
    with shards.writing_for_user(user.pk), ShardQueries(alias) as queries:
        assert selectors.unread_count(user.pk) == 0
    assert queries.counts() == (1, 0)


def test_a_moved_shard_is_read_on_the_targets_replica_only_after_it_replayed_the_copy(
    two_users_on_one_database, replica_delay, wait_for_replicas, settings
):
    from scaling.sharding import moves as shard_moves

    alias, user, _other = two_users_on_one_database
    target = next(a for a in shards.shard_aliases() if a != alias)
    replica_delay("3s")
    shard_moves.move(shards.shard_of_user(user.pk), target, grace_seconds=0)
    with ShardQueries(target) as queries:
        assert selectors.unread_count(user.pk) == 1
    assert queries.counts() == (1, 0)  # the target's replica has not replayed the copy yet
    replica_delay("0")
    wait_for_replicas()
    with ShardQueries(target) as queries:
        assert selectors.unread_count(user.pk) == 1
    assert queries.counts() == (0, 1)


def test_a_shard_replica_that_fails_under_a_get_is_taken_out_and_the_view_rerun_on_the_shard(
    two_users_on_one_database,
):
    from django.db import OperationalError
    from django.http import HttpResponse
    from django.test import RequestFactory

    from scaling.db import consistency
    from scaling.db.replicas import replica_health

    alias, user, _other = two_users_on_one_database
    replica = settings.SHARD_REPLICAS[alias]
    read_from = []

    def view(request):
        read_from.append(shards.read_alias(shards.shard_of_user(user.pk)))
        if len(read_from) == 1:
            raise OperationalError("connection to the shard replica refused")  # it died under this read
        return HttpResponse(str(selectors.unread_count(user.pk)))

    request = RequestFactory().get("/")
    request.resolver_match = type("Match", (), {"func": staticmethod(view), "args": (), "kwargs": {}})()
    middleware = consistency.ReadYourWritesMiddleware(lambda r: HttpResponse())
    token = consistency._state.set(consistency.ReadState())
    try:
        try:
            view(request)
        except OperationalError as error:
            response = middleware.process_exception(request, error)
    finally:
        consistency._state.reset(token)
    assert read_from == [replica, alias]  # no main-database replica was read: the shard's alone is retried
    assert response is not None and response.content == b"1"
    assert not replica_health.is_healthy(replica, primary=alias)
    replica_health.check(replica, alias)
