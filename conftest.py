"""Shared fixtures. The services these tests use are started by ``make test``
(``python3 -m deploy.herd test``): a private PostgreSQL primary with a streaming replica,
Redis and RabbitMQ, on the test profile's ports."""

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from django.db import connections

from scaling.db import positions
from scaling.db.replicas import replica_aliases


@pytest.fixture
def make_user():
    """``make_user(username=None, *, password, display_name, is_staff, email)`` of
    ``accounts.tests.factories``: a user made through the services."""
    from accounts.tests.factories import make_user

    return make_user


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def shopper(make_user):
    return make_user("shopper")


@pytest.fixture
def staff(make_user):
    return make_user("staffer", is_staff=True)


@pytest.fixture
def wait_for_replicas():
    """Call it after a commit: returns once every replica has replayed it
    (``scaling.db.positions.wait_until_replayed``)."""
    return positions.wait_until_replayed


@pytest.fixture
def stopped():
    """``with stopped(process):`` the real service process (``deploy.herd``'s Redis, RabbitMQ,
    Postgres primary or replica) is stopped for the block, then started again and waited for:
    answering, this process's connections to it renewed, every replica caught up with its
    primary and seen healthy, so later tests are unaffected."""
    return _stopped


@contextlib.contextmanager
def _stopped(process):
    process.stop()
    assert not process.running(), f"{process.name} is still running"
    try:
        yield process
    finally:
        process.start()
        _wait_until_serving(process)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's, and before the test databases are dropped, the primary position
    checks' kept connections closed (``scaling.db.replicas.PrimaryHealth.close``)."""
    yield
    from scaling.db.replicas import primary_health

    primary_health.close()


@pytest.fixture
def frozen():
    """``with frozen(process) as freeze:`` the real service process and its children are
    SIGSTOPped for the block: connections to it are accepted by the kernel and never
    answered, as in a partition. Then SIGCONT and waited for as ``stopped`` does. A block
    still running after ``at_most`` seconds (a hang) thaws it early and sets
    ``freeze.thawed_early``, so a hang fails the test instead of blocking it."""
    return _frozen


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


class _Freeze:
    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.thawed_early = threading.Event()

    def signal(self, number: int) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)


@contextlib.contextmanager
def _frozen(process, at_most: float = 20.0):
    pid = process.pid()
    assert pid, f"{process.name} is not running"
    freeze = _Freeze([pid, *_children(pid)])
    freeze.signal(signal.SIGSTOP)

    def thaw_early() -> None:
        freeze.thawed_early.set()
        freeze.signal(signal.SIGCONT)

    watchdog = threading.Timer(at_most, thaw_early)
    watchdog.start()
    try:
        yield freeze
    finally:
        watchdog.cancel()
        freeze.signal(signal.SIGCONT)
        _wait_until_serving(process)


def _wait_until_serving(process, timeout: float = 30.0) -> None:
    import redis
    from django.conf import settings

    from deploy.herd.services import Postgres, Redis
    from scaling.db.replicas import primary_aliases, primary_health, replica_health

    deadline = time.monotonic() + timeout
    if isinstance(process, Redis):
        client = redis.Redis(host="127.0.0.1", port=process.port)
        while True:
            with contextlib.suppress(redis.RedisError):
                if client.ping():  # not while it still loads its append-only file
                    break
            assert time.monotonic() < deadline, f"{process.name} did not answer PING"
            time.sleep(0.05)
        client.close()
    if isinstance(process, Postgres) and not process.replica:
        # The main database and the shard databases live in this server: drop the
        # connections it broke, and wait until each answers a new one.
        for alias in primary_aliases():
            connections[alias].close()
            while not primary_health.check(alias):
                assert time.monotonic() < deadline, f"{alias} did not accept connections within {timeout}s"
                time.sleep(0.05)
    if isinstance(process, Postgres):
        # A restarted replica, or the replicas of a restarted primary (they reconnect to it).
        replicas = [(alias, "default") for alias in replica_aliases()]
        replicas += [(replica, shard) for shard, replica in settings.SHARD_REPLICAS.items()]
        for alias, primary in replicas:
            connections[alias].close()
            target = positions.current(primary)
            while not (replica_health.check(alias, primary).healthy and positions.replayed(alias) >= target):
                assert time.monotonic() < deadline, f"{alias} did not catch up within {timeout}s"
                time.sleep(0.05)
            connections[alias].close()


@pytest.fixture(scope="session", autouse=True)
def collected_static_files():
    """Pages name static files by their hashed names: collect them, as the image does, when
    there is no manifest yet, or it lacks a static file or is older than one."""
    import json
    from pathlib import Path

    from django.conf import settings
    from django.core.management import call_command

    manifest = settings.STATIC_ROOT / "staticfiles.json"
    base = Path(settings.BASE_DIR)
    found = [*base.glob("static/**/*"), *base.glob("*/static/**/*")]
    sources = [p for p in found if p.is_file() and not p.relative_to(base).parts[0].startswith(".")]
    if manifest.exists():
        listed = json.loads(manifest.read_text()).get("paths", {})
        names = ["/".join(p.parts[p.parts.index("static") + 1 :]) for p in (s.relative_to(base) for s in sources)]
        current = all(name in listed for name in names)
        current = current and all(p.stat().st_mtime <= manifest.stat().st_mtime for p in sources)
    if not manifest.exists() or not current:
        call_command("collectstatic", "--noinput", verbosity=0)


@pytest.fixture(autouse=True)
def empty_cache():
    """Each test starts with an empty cache Redis, entries of earlier tests' rows gone, and
    talks to it: a breaker an earlier test's outage opened is closed (``scaling.cache.breaker``)."""
    from django.core.cache import caches
    from django_redis import get_redis_connection

    get_redis_connection("default").breaker.reset()
    caches["default"].clear()


@pytest.fixture(autouse=True)
def clear_login_throttles():
    """Failed log-ins, sign-ups and job starts of earlier tests (or runs) do not count
    against this one (every ``scaling.web.throttle`` counter)."""
    from django_redis import get_redis_connection

    redis = get_redis_connection("state")
    for key in redis.scan_iter("herd:throttle:*"):
        redis.delete(key)


@pytest.fixture
def replica_delay():
    """Set the replica's ``recovery_min_apply_delay`` (a real, predictable lag); reset after."""
    import psycopg
    from django.conf import settings

    replica = settings.DATABASES["replica1"]

    def apply(delay: str) -> None:
        with psycopg.connect(
            host=replica["HOST"], port=replica["PORT"], user=replica["USER"], dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.2)  # the startup process picks the new value up on its next loop

    yield apply
    apply("0")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """A ``django_db`` test that names no databases may use the main one and every shard:
    per-user rows (jobs, notifications) live on the shards, and any page a logged-in user
    sees reads their unread count there (docs/SHARDING.md)."""
    from django.conf import settings

    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker is None or marker.kwargs.get("databases") is not None:
            continue
        databases = ["default", *settings.SHARD_DATABASES, *settings.SHARD_REPLICAS.values()]
        item.add_marker(pytest.mark.django_db(*marker.args, **{**marker.kwargs, "databases": databases}), append=False)
