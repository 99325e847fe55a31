"""Bad configuration ends in one line that names the setting, not a traceback.

``explain_failures()`` wraps ``manage.py``: a ``ConfigError`` from the settings, or a
database or Redis that cannot be reached, prints ``configuration error: ...`` naming
the environment variable to fix and exits with status 2. ``check_services()`` is the
same diagnosis run up front by ``manage.py serve`` before it takes traffic.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from config.env import ConfigError, redact


def _database_setting(alias: str) -> str:
    if alias == "default":
        return "DATABASE_URL"
    if alias.startswith("shard"):
        return f"SHARD_DATABASE_URLS item {alias.removeprefix('shard')}"
    return f"DATABASE_REPLICA_URLS item {alias.removeprefix('replica')}"


def _describe_database(alias: str) -> str:
    from django.conf import settings

    db = settings.DATABASES[alias]
    user = f"{db.get('USER')}@" if db.get("USER") else ""
    return f"postgres://{user}{db.get('HOST')}:{db.get('PORT')}/{db.get('NAME')}"


def unreachable_services(include_optional: bool = True) -> list[tuple[str, str, bool]]:
    """(setting, problem, required) for each database or Redis that does not answer."""
    from django.conf import settings
    from django.db import DatabaseError, connections
    from django_redis import get_redis_connection
    from redis.exceptions import RedisError

    problems = []
    for alias in settings.DATABASES:
        required = alias == "default"
        if not (required or include_optional):
            continue
        try:
            connections[alias].ensure_connection()
        except DatabaseError as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            problems.append(
                (_database_setting(alias), f"cannot connect to {_describe_database(alias)}: {reason}", required)
            )
    for cache_alias, setting in (("state", "REDIS_STATE_URL"), ("default", "REDIS_CACHE_URL")):
        required = cache_alias == "state"
        if not (required or include_optional):
            continue
        try:
            get_redis_connection(cache_alias).ping()
        except RedisError as error:
            location = redact(settings.CACHES[cache_alias]["LOCATION"])
            problems.append((setting, f"cannot connect to {location}: {error}", required))
    return problems


def cache_policy_problem() -> str | None:
    """What is wrong with the cache Redis's eviction policy, if anything.

    ``scaling.cache`` keeps versions without a time to live and relies on Redis never
    evicting them: a policy that may evict any key (``allkeys-*``) could forget a
    version after a write and serve what that write invalidated. A Redis that refuses
    ``CONFIG`` (some managed ones) cannot be checked here: DEPLOY.md says what to set.
    """
    from django_redis import get_redis_connection
    from redis.exceptions import RedisError

    try:
        reply = get_redis_connection("default").config_get("maxmemory-policy")
    except RedisError:
        return None
    policy = reply.get("maxmemory-policy", "")
    if policy.startswith("allkeys"):
        return (
            f"maxmemory-policy is {policy}, which may evict the cache's versions and serve stale pages; "
            "use volatile-lru"
        )
    return None


def check_services() -> None:
    """Exit with one line per required service that is down or misconfigured; warn for
    optional ones."""
    problems = unreachable_services()
    if (policy := cache_policy_problem()) is not None:
        problems.append(("REDIS_CACHE_URL", policy, True))
    for setting, problem, required in problems:
        label = "configuration error" if required else "warning"
        print(f"{label}: {setting}: {problem}", file=sys.stderr)
    if any(required for _, _, required in problems):
        sys.exit(2)


@contextmanager
def explain_failures() -> Iterator[None]:
    from django.db import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError

    try:
        yield
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    except (OperationalError, RedisConnectionError):
        problems = unreachable_services()
        if not problems:
            raise
        setting, problem, _ = problems[0]
        print(f"configuration error: {setting}: {problem}", file=sys.stderr)
        sys.exit(2)
