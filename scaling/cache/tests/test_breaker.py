"""The cache Redis's circuit breaker on the real Redis of the test profile: stopped, hung
(SIGSTOP) and back. Calls that reach the cache Redis are counted by the breaker's metric
(``herd_cache_redis_calls_total``), never timed."""

from __future__ import annotations

import contextlib
import os
import signal
from decimal import Decimal

import pytest
from django.core.cache import caches
from django.test import Client
from django_redis import get_redis_connection
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from accounts.tests.factories import make_user
from catalog import services as catalog_services
from catalog.models import Product
from deploy.faults import Faults
from deploy.herd.profiles import PROFILES
from deploy.herd.services import Redis
from scaling.cache import versions
from scaling.cache.breaker import SLOW_WINDOW, BreakerRedis, CacheRedisSkipped
from scaling.ops.metrics import REPLICA

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CALLS = 20


def calls(outcome: str) -> float:
    """Calls to the cache Redis so far in this process: ``sent``, ``failed`` or ``skipped``."""
    return REGISTRY.get_sample_value("herd_cache_redis_calls_total", {"replica": REPLICA, "outcome": outcome}) or 0.0


def lookups(cache: str, result: str) -> float:
    labels = {"replica": REPLICA, "cache": cache, "result": result}
    return REGISTRY.get_sample_value("herd_cache_lookups_total", labels) or 0.0


def breaker():
    return get_redis_connection("default").breaker


@pytest.fixture
def pages(wait_for_replicas) -> list[str]:
    category = catalog_services.create_category(name="Breaker", slug="breaker")
    catalog_services.create_product(category=category, name="Lamp", slug="lamp", price=Decimal("12.00"), stock=3)
    wait_for_replicas()
    return ["/", "/products/", "/c/breaker/", "/p/lamp/"]


@pytest.fixture
def long_cool_down(settings):
    """No probe within the test, however slow the machine: each call is skipped or not by count alone."""
    settings.HERD_CACHE_BREAKER_SECONDS = 3600
    return settings


@contextlib.contextmanager
def hung(process: Redis):
    """The real redis-server stopped with SIGSTOP: connections are accepted, nothing answers."""
    pid = process.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def every_kind_of_cache_call() -> None:
    """Django's cache API (answered as django-redis's IGNORE_EXCEPTIONS answers), the raw
    client as ``scaling.cache`` uses it, and a pipeline: each answers, none is sent."""
    cache = caches["default"]
    assert cache.get("breaker:key", "default") == "default"
    assert cache.get_many(["breaker:a", "breaker:b"]) == {}
    assert cache.set("breaker:key", 1) is None
    assert cache.add("breaker:key", 1) is None
    assert cache.delete("breaker:key") is None
    assert cache.incr("breaker:count") is None
    with pytest.raises(CacheRedisSkipped):
        versions.lookup(["table:catalog_product"], "breaker:entry")
    with pytest.raises(CacheRedisSkipped):
        get_redis_connection("default").pipeline(transaction=False).incr("breaker:count").execute()


def test_with_the_cache_redis_stopped_only_the_first_call_reaches_it_and_every_page_renders(
    pages, stopped, long_cool_down
):
    anonymous = Client(raise_request_exception=False)
    with stopped(Redis(PROFILES["test"], "cache")):
        sent, failed, skipped = calls("sent"), calls("failed"), calls("skipped")
        assert caches["default"].get("breaker:first") is None  # refused, after redis-py's retries
        assert (calls("sent"), calls("failed")) == (sent + 1, failed + 1)
        assert breaker().is_open
        for _ in range(CALLS):
            every_kind_of_cache_call()
        for path in pages:
            assert anonymous.get(path).status_code == 200, path
        assert calls("sent") == sent + 1
        assert calls("skipped") > skipped + CALLS


def test_with_the_cache_redis_hung_only_the_first_call_waits_for_it_and_every_page_renders(pages, long_cool_down):
    anonymous = Client(raise_request_exception=False)
    caches["default"].set("breaker:warm", 1)  # a pooled connection, as a replica keeps
    with hung(Redis(PROFILES["test"], "cache")):
        sent, failed = calls("sent"), calls("failed")
        assert caches["default"].get("breaker:warm") is None  # its socket timeout, once
        assert (calls("sent"), calls("failed")) == (sent + 1, failed + 1)
        for _ in range(CALLS):
            every_kind_of_cache_call()
        for path in pages:
            assert anonymous.get(path).status_code == 200, path
        assert calls("sent") == sent + 1


def test_once_the_cache_redis_is_back_one_probe_after_the_cool_down_closes_the_breaker(pages, stopped, long_cool_down):
    cache, anonymous = caches["default"], Client()
    with stopped(Redis(PROFILES["test"], "cache")):
        assert cache.get("breaker:key") is None
    assert breaker().is_open
    # Back, but within the cool-down: still skipped.
    sent = calls("sent")
    cache.set("breaker:key", "kept")
    assert cache.get("breaker:key") is None
    assert calls("sent") == sent
    long_cool_down.HERD_CACHE_BREAKER_SECONDS = 0  # the cool-down is over
    assert cache.get("breaker:key") is None  # the probe: sent, answered
    assert not breaker().is_open
    cache.set("breaker:key", "kept")
    assert cache.get("breaker:key") == "kept"
    hits = lookups("product-page:anonymous-html", "hit")
    assert anonymous.get("/p/lamp/").status_code == 200  # built and stored
    assert anonymous.get("/p/lamp/").status_code == 200  # served from the cache
    assert lookups("product-page:anonymous-html", "hit") == hits + 1


def test_a_restart_of_the_cache_redis_costs_no_miss_the_broken_pooled_connection_is_retried(stopped, long_cool_down):
    cache = caches["default"]
    cache.set("breaker:before", 1)  # a pooled connection, which the restart breaks
    failed = calls("failed")
    with stopped(Redis(PROFILES["test"], "cache")):
        pass
    cache.set("breaker:after", "kept")
    assert cache.get("breaker:after") == "kept"
    assert calls("failed") == failed
    assert not breaker().is_open


def test_the_state_redis_has_no_breaker_every_call_while_it_is_down_raises_and_it_serves_at_once_when_back(
    stopped, long_cool_down
):
    state = caches["state"]
    skipped = calls("skipped")
    with stopped(Redis(PROFILES["test"], "state")):
        for _ in range(2):
            with pytest.raises(RedisConnectionError) as raised:
                state.get("herd:breaker-test")
            assert not isinstance(raised.value, CacheRedisSkipped)
    state.set("herd:breaker-test", "back", 5)
    assert state.get("herd:breaker-test") == "back"
    assert calls("skipped") == skipped


def test_a_change_made_while_the_cache_redis_hung_is_invalidated_once_it_answers(
    pages, long_cool_down, wait_for_replicas
):
    """A partition, not a restart: the entries outlive it, so the versions the change
    could not write are written by the next call that reaches the cache Redis."""
    anonymous, author = Client(), make_user("breaker-author")
    assert anonymous.get("/p/lamp/").status_code == 200  # built and stored
    hits = lookups("product-page:anonymous-html", "hit")
    assert anonymous.get("/p/lamp/").status_code == 200
    assert lookups("product-page:anonymous-html", "hit") == hits + 1
    with hung(Redis(PROFILES["test"], "cache")):
        catalog_services.post_review(
            user=author, product=Product.objects.get(slug="lamp"), rating=5, text="Written in a partition."
        )
        assert breaker().is_open
    wait_for_replicas()
    long_cool_down.HERD_CACHE_BREAKER_SECONDS = 0  # the cool-down is over
    assert "Written in a partition." in anonymous.get("/p/lamp/").content.decode()
    assert not versions._missed


def test_a_cache_redis_that_answers_slowly_is_skipped_like_one_that_is_away(long_cool_down):
    """Through the drills' fault proxy (``deploy.faults``), each answer of the real cache
    Redis held a little past ``HERD_CACHE_SLOW_CALL_SECONDS``: half a window of slow calls
    opens the breaker, and the calls after it are skipped."""
    faults = Faults(PROFILES["test"], ("redis-cache",))
    client = BreakerRedis(host="127.0.0.1", port=faults.proxies["redis-cache"].port, socket_timeout=2)
    try:
        client.set("breaker:slow", "kept")
        sent, slow, skipped = calls("sent"), calls("slow"), 0
        with faults.injected("redis-cache", "delay", 1000 * long_cool_down.HERD_CACHE_SLOW_CALL_SECONDS + 30):
            for _ in range(CALLS):
                try:
                    assert client.get("breaker:slow") == b"kept"  # slow, but answered
                except CacheRedisSkipped:
                    skipped += 1
            assert client.breaker.is_open
            assert (calls("sent") - sent, calls("slow") - slow) == (SLOW_WINDOW // 2, 1)
            assert skipped == CALLS - SLOW_WINDOW // 2
        long_cool_down.HERD_CACHE_BREAKER_SECONDS = 0  # the cool-down is over
        assert client.get("breaker:slow") == b"kept"  # the probe, answered promptly
        assert not client.breaker.is_open
    finally:
        client.close()
        faults.close()
