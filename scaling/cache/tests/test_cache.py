"""The query cache and the object cache on the real primary, replica and Redis."""

import threading
import time
from dataclasses import dataclass

import pytest
from django.core.cache import caches
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from scaling.cache import versions
from scaling.cache.objects import ObjectCache, fields_hash
from scaling.cache.queries import cached_query
from scaling.cache.versions import read_versions
from scaling.db.replicas import replica_health
from scaling.ops import preflight

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def names():
    return User.objects.filter(username__startswith="u").order_by("username").values_list("username", "first_name")


def queries_on_every_alias():
    return CaptureQueriesContext(connections["default"]), CaptureQueriesContext(connections["replica1"])


@pytest.fixture
def users(wait_for_replicas):
    User.objects.create(username="u1")
    User.objects.create(username="u2")
    wait_for_replicas()
    replica_health.check("replica1")


def test_a_repeated_query_is_answered_from_the_cache_without_sql(users):
    first = cached_query(names())
    primary, replica = queries_on_every_alias()
    with primary, replica:
        again = cached_query(names())
    assert again == first == [("u1", ""), ("u2", "")]
    assert not [q for q in primary.captured_queries + replica.captured_queries if "accounts_user" in q["sql"]]


def test_a_committed_write_to_the_table_invalidates_the_query(users):
    cached_query(names())
    User.objects.filter(username="u1").update(first_name="One")
    assert cached_query(names()) == [("u1", "One"), ("u2", "")]


def test_a_rolled_back_write_invalidates_nothing(users):
    cached_query(names())
    before = read_versions(["table:accounts_user"])
    with pytest.raises(RuntimeError), transaction.atomic():
        User.objects.filter(username="u1").update(first_name="Never")
        raise RuntimeError("roll back")
    assert read_versions(["table:accounts_user"]) == before
    assert cached_query(names()) == [("u1", ""), ("u2", "")]


def test_inside_a_transaction_a_query_sees_the_transactions_own_writes(users):
    cached_query(names())
    with transaction.atomic():
        User.objects.filter(username="u2").update(first_name="Two")
        assert cached_query(names()) == [("u1", ""), ("u2", "Two")]
        # Another connection still sees the committed rows: the version changes on commit.
        assert list(names().using("replica1")) == [("u1", ""), ("u2", "")]
    assert cached_query(names()) == [("u1", ""), ("u2", "Two")]


def test_what_a_transaction_reads_of_its_own_writes_is_not_cached_for_others(users):
    with pytest.raises(RuntimeError), transaction.atomic():
        User.objects.filter(username="u1").update(first_name="Uncommitted")
        assert cached_query(names()) == [("u1", "Uncommitted"), ("u2", "")]
        raise RuntimeError("roll back")
    assert cached_query(names()) == [("u1", ""), ("u2", "")]


def test_a_rolled_back_savepoint_gives_the_cache_back_to_the_transaction(users):
    cached_query(names())
    primary, replica = queries_on_every_alias()
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():
            User.objects.filter(username="u1").update(first_name="Undone")
            raise RuntimeError("roll back the savepoint")
        with primary, replica:
            assert cached_query(names()) == [("u1", ""), ("u2", "")]
    assert not [q for q in primary.captured_queries + replica.captured_queries if "accounts_user" in q["sql"]]


def test_after_a_write_the_cache_is_never_refilled_from_a_replica_that_has_not_replayed_it(users, replica_delay):
    replica_delay("3s")
    cached_query(names())
    User.objects.filter(username="u1").update(first_name="Fresh")
    primary, replica = queries_on_every_alias()
    with primary, replica:
        assert cached_query(names()) == [("u1", "Fresh"), ("u2", "")]
    assert [q for q in primary.captured_queries if "accounts_user" in q["sql"]]
    assert not [q for q in replica.captured_queries if "accounts_user" in q["sql"]]


def test_a_fill_waits_briefly_for_a_replica_a_little_behind_instead_of_reading_the_primary(
    users, replica_delay, settings
):
    settings.HERD_FILL_WAIT_SECONDS = 5.0
    replica_delay("300ms")
    cached_query(names())
    User.objects.filter(username="u1").update(first_name="Soon")
    primary, replica = queries_on_every_alias()
    with primary, replica:
        assert cached_query(names()) == [("u1", "Soon"), ("u2", "")]
    assert not [q for q in primary.captured_queries if "accounts_user" in q["sql"]]
    assert [q for q in replica.captured_queries if "accounts_user" in q["sql"]]


def test_a_fill_uses_the_replica_once_it_has_replayed_the_last_write(users):
    primary, replica = queries_on_every_alias()
    with primary, replica:
        cached_query(names())
    assert [q for q in replica.captured_queries if "accounts_user" in q["sql"]]


def test_raw_sql_writes_invalidate_too(users):
    cached_query(names())
    with connections["default"].cursor() as cursor:
        cursor.execute("UPDATE accounts_user SET first_name = 'Raw' WHERE username = 'u2'")
    assert cached_query(names()) == [("u1", ""), ("u2", "Raw")]


@dataclass(frozen=True)
class Card:
    username: str
    first_name: str


class CountingBuilder:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, username: str) -> Card:
        with self.lock:
            self.calls += 1
        time.sleep(self.delay)
        user = User.objects.get(username=username)
        return Card(user.username, user.first_name)


def test_an_object_is_built_once_and_served_from_the_cache_until_invalidated(users):
    build = CountingBuilder()
    cards = ObjectCache("card", Card, build)
    assert cards.get("u1") == Card("u1", "")
    assert cards.get("u1") == Card("u1", "")
    assert build.calls == 1
    with transaction.atomic():
        User.objects.filter(username="u1").update(first_name="New")
        cards.invalidate_on_commit(["u1"])
    assert cards.get("u1") == Card("u1", "New")
    assert build.calls == 2


def test_inside_a_transaction_that_changed_an_object_its_reads_are_built_afresh_and_not_stored(users):
    build = CountingBuilder()
    cards = ObjectCache("card-in-transaction", Card, build)
    cards.get("u1")
    with pytest.raises(RuntimeError), transaction.atomic():
        User.objects.filter(username="u1").update(first_name="Uncommitted")
        cards.invalidate_on_commit(["u1"])
        assert cards.get("u1") == Card("u1", "Uncommitted")
        assert cards.derived("u1", "greeting", lambda: "Hello Uncommitted") == "Hello Uncommitted"
        raise RuntimeError("roll back")
    assert cards.get("u1") == Card("u1", "")
    assert cards.derived("u1", "greeting", lambda: "Hello") == "Hello"
    assert build.calls == 2  # the first read, and the one inside the transaction


def test_an_object_never_written_is_filled_from_a_lagging_replica_right_after_other_writes(
    users, replica_delay, wait_for_replicas
):
    """A missing version means "not written since this cache began", so the first build
    must reach only the cache's epoch, which the replica has replayed: not the newest
    write anywhere, which it has not."""
    read_versions(["object:card:u2"])  # the cache's epoch begins here...
    wait_for_replicas()  # ...and the replica has replayed it
    replica_delay("3s")
    User.objects.filter(username="u2").update(first_name="Elsewhere")
    cards = ObjectCache("card", Card, CountingBuilder())
    primary, replica = queries_on_every_alias()
    with primary, replica:
        assert cards.get("u1") == Card("u1", "")
    assert [q for q in replica.captured_queries if "accounts_user" in q["sql"]]
    assert not [q for q in primary.captured_queries if "accounts_user" in q["sql"]]


def test_versions_have_no_time_to_live_so_the_cache_evicts_entries_but_never_versions(users):
    cards = ObjectCache("card", Card, CountingBuilder())
    cards.get("u1")
    with transaction.atomic():
        User.objects.filter(username="u1").update(first_name="Kept")
        cards.invalidate_on_commit(["u1"])
    cards.get("u1")
    redis = versions._redis()
    assert redis.ttl("herd:version:object:card:u1") == -1  # exists, never expires
    assert redis.ttl("herd:version:epoch") == -1
    assert redis.ttl(caches["default"].client.make_key(cards.key("u1"))) > 0
    assert redis.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-lru"


def test_serve_refuses_a_cache_redis_that_could_evict_versions():
    redis = versions._redis()
    assert preflight.cache_policy_problem() is None
    redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        assert "allkeys-lru" in preflight.cache_policy_problem()
    finally:
        redis.config_set("maxmemory-policy", "volatile-lru")


def test_a_reader_that_started_before_a_write_cannot_put_old_data_back(users):
    started, release = threading.Event(), threading.Event()

    def slow_build(username: str) -> Card:
        user = User.objects.get(username=username)  # reads the old row...
        started.set()
        release.wait(5)  # ...while the write commits and invalidates
        return Card(user.username, user.first_name)

    cards = ObjectCache("card-race", Card, slow_build)
    reader = threading.Thread(target=lambda: (cards.get("u1"), connections.close_all()))
    reader.start()
    started.wait(5)
    with transaction.atomic():
        User.objects.filter(username="u1").update(first_name="After")
        cards.invalidate_on_commit(["u1"])
    release.set()
    reader.join(5)
    fresh = ObjectCache("card-race", Card, CountingBuilder())
    assert fresh.get("u1") == Card("u1", "After")


def test_a_missing_hot_key_is_built_by_one_reader_while_the_others_wait(users):
    build = CountingBuilder(delay=0.3)
    cards = ObjectCache("card-hot", Card, build)
    results = []

    def read():
        results.append(cards.get("u2"))
        connections.close_all()

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [Card("u2", "")] * 8
    assert build.calls == 1


def test_an_expired_hot_key_is_rebuilt_once_while_the_others_serve_the_old_value(users):
    build = CountingBuilder(delay=0.3)
    cards = ObjectCache("card-expiring", Card, build, fresh_seconds=0)
    cards.get("u1")
    results = []

    def read():
        results.append(cards.get("u1"))
        connections.close_all()

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [Card("u1", "")] * 8
    assert build.calls == 2


def test_keys_name_the_release_and_the_shape(settings):
    cards = ObjectCache("card", Card, CountingBuilder())
    key = cards.key("u1")
    settings.HERD_RELEASE = "v2"
    assert cards.key("u1") != key
    assert fields_hash(Card) in key
