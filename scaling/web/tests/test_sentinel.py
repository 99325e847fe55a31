"""The state Redis under Sentinel, for real: two redis-server nodes and three Sentinels of
``deploy.herd`` (``sentinel_profile``, beside the test herd), the primary SIGKILLed.

The sessions are saved and read through a django-redis cache configured as the settings
configure the state alias when ``REDIS_STATE_SENTINELS`` is set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time

import pytest
import redis
from django.test import override_settings
from django_redis.cache import RedisCache

from deploy.herd.profiles import PROFILES, SENTINEL_MASTER, sentinel_profile
from deploy.herd.services import state_redis
from scaling.web.sessions import SessionNotReplicated, SessionStore

PROFILE = sentinel_profile(PROFILES["test"])
USERS = 12


def sentinels() -> list[tuple[str, int]]:
    return [("127.0.0.1", process.port) for process in state_redis(PROFILE) if process.name.startswith("sentinel")]


def master_port() -> int | None:
    for address in sentinels():
        with contextlib.suppress(redis.RedisError):
            found = redis.Redis(*address, socket_timeout=1).sentinel_get_master_addr_by_name(SENTINEL_MASTER)
            if found:
                return int(found[1])
    return None


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)
    return found


def replica_ready(port: int) -> bool:
    with contextlib.suppress(redis.RedisError):
        info = redis.Redis("127.0.0.1", port, socket_timeout=1).info("replication")
        return info["role"] == "slave" and info.get("master_link_status") == "up"
    return False


@pytest.fixture(scope="module")
def cluster():
    """The two nodes and three Sentinels, new (their config files written afresh), the
    second node a replica of the first; stopped after the module (its last test fails the
    first node over)."""
    processes = state_redis(PROFILE)
    shutil.rmtree(PROFILE.state, ignore_errors=True)
    for process in processes:
        process.start()
    first, second = processes[0], processes[1]
    wait_until(lambda: replica_ready(second.port), 20, "the second node replicating")
    wait_until(lambda: len(redis.Redis(*sentinels()[0]).sentinel_sentinels(SENTINEL_MASTER)) == 2, 20, "sentinels met")
    yield first, second
    for process in reversed(processes):
        process.stop()
    shutil.rmtree(PROFILE.state, ignore_errors=True)


@pytest.fixture(scope="module")
def store(cluster):
    """SessionStore on a cache configured as config/settings.py configures the state alias
    under Sentinel."""
    cache = RedisCache(
        f"redis://{SENTINEL_MASTER}/0",
        {
            "OPTIONS": {
                "CONNECTION_FACTORY": "scaling.cache.redis_clients.SharedSentinelClientFactory",
                "SENTINELS": sentinels(),
                "SENTINEL_KWARGS": {"socket_timeout": 0.5},
                "SOCKET_TIMEOUT": 2,
            },
            "KEY_PREFIX": "herd",
            "TIMEOUT": None,
        },
    )

    def make(key: str | None = None) -> SessionStore:
        session = SessionStore(key)
        session._cache = cache
        return session

    return make


@override_settings(HERD_SESSION_REPLICAS=1, HERD_SESSION_REPLICA_WAIT_MS=200)
def test_a_session_the_connected_replica_did_not_acknowledge_is_not_answered_as_saved(cluster, store):
    _, second = cluster
    os.kill(second.pid(), signal.SIGSTOP)  # connected, answering nothing
    try:
        session = store()
        session["user"] = "unlucky"
        with pytest.raises(SessionNotReplicated):
            session.create()
    finally:
        os.kill(second.pid(), signal.SIGCONT)
    session = store()
    session["user"] = "lucky"
    session.create()  # acknowledged again
    assert store(session.session_key).load() == {"user": "lucky"}


@override_settings(HERD_SESSION_REPLICAS=1)
def test_every_acknowledged_session_survives_a_failover_of_the_state_redis(cluster, store):
    first, second = cluster
    keys = []
    for number in range(USERS):
        session = store()
        session["user"] = f"user{number}"
        session.create()
        keys.append(session.session_key)
    os.kill(first.pid(), signal.SIGKILL)
    assert wait_until(lambda: master_port() == second.port, 30, "the Sentinels promote the replica")
    found = {}
    for key in keys:
        # New connections ask the Sentinels for the primary: the promoted node.
        found[key] = wait_until(lambda key=key: _load(store, key), 10, "the new primary answers").get("user")
    assert sorted(found.values()) == sorted(f"user{n}" for n in range(USERS))


def _load(store, key: str) -> dict | None:
    with contextlib.suppress(redis.RedisError):
        return store(key).load() or None
    return None
