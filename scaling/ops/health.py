"""Liveness (``/healthz``), readiness (``/readyz``) and draining after SIGTERM.

Readiness requires a database to read: the primary, or, while it is unreachable, a
healthy replica (read-only mode). The state Redis, the cache, shards and the replicas
otherwise are reported, not required: a store every web replica shares never takes
them all out (while the state Redis is away, or failing over, anonymous pages answer and
logged-in ones are the clean 503). A check that has not answered within ``HERD_READINESS_DEADLINE_SECONDS``
(a hung server) counts as failed. ``HealthFront`` answers probes on the event loop,
before Django's request threads. The rules and why: docs/OPERATIONS.md.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from scaling.db.replicas import PRIMARY, primary_health, replica_aliases, replica_health
from scaling.deadline import Workers

_draining = threading.Event()


def start_draining() -> None:
    _draining.set()


def is_draining() -> bool:
    return _draining.is_set()


def _check_database(alias: str) -> str:
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except DatabaseError as error:
        connections[alias].close()
        return f"error: {str(error).strip().splitlines()[0]}"


def _check_redis(cache_alias: str) -> str:
    try:
        get_redis_connection(cache_alias).ping()
        return "ok"
    except RedisError as error:
        return f"error: {error}"


def _check_primary(alias: str) -> str:
    """``_check_database``, and what it found told to ``primary_health`` (an error on this
    thread's connection is confirmed with a new one: it may only have gone stale)."""
    answer = _check_database(alias)
    if answer == "ok":
        primary_health.mark_up(alias)
    elif primary_health.check(alias):
        answer = "ok"
    return answer


_checks = Workers("readiness")


def _check_replica(alias: str) -> str:
    status = replica_health.check(alias)
    return "ok" if status.healthy else f"error: {status.error or 'lagging'}"


def readiness() -> tuple[bool, dict[str, str]]:
    """Whether this replica should take traffic, and what each dependency said.

    The checks run at once, each on a thread of its own (``scaling.deadline``); one that
    has not answered within ``HERD_READINESS_DEADLINE_SECONDS`` counts as failed, and is not
    started again while it still runs (a hung server costs one thread).
    """
    calls = {
        "database:default": functools.partial(_check_primary, PRIMARY),
        "redis:state": functools.partial(_check_redis, "state"),
        "redis:cache": functools.partial(_check_redis, "default"),
        **{f"database:{alias}": functools.partial(_check_replica, alias) for alias in replica_aliases()},
        # A shard that is down fails its users' writes (jobs, notifications), not the whole replica.
        **{f"database:{alias}": functools.partial(_check_primary, alias) for alias in settings.SHARD_DATABASES},
    }
    answers = _checks.answers(calls, settings.HERD_READINESS_DEADLINE_SECONDS)
    # Without the primary, a healthy replica serves reads (read-only mode): the primary is
    # shared by every web replica, and failing them all for it would turn reads away too.
    primary = answers["database:default"]
    readable = primary == "ok" or any(answers[f"database:{alias}"] == "ok" for alias in replica_aliases())
    ready = not is_draining() and readable
    return ready, {"draining": "yes" if is_draining() else "no", **answers}


PATHS = ("/healthz", "/readyz")


def answer(path: str, detailed: bool = True) -> tuple[int, dict]:
    """The status and JSON body for one of ``PATHS``; the checks only when ``detailed``."""
    if path == "/healthz":
        return 200, {"status": "alive"}
    ready, checks = readiness()
    body = {"status": "ready" if ready else "not ready"}
    return (200 if ready else 503), ({**body, "checks": checks} if detailed else body)


class HealthFront:
    """ASGI: answers ``PATHS`` itself and passes everything else to ``app``.

    ``/healthz`` is answered on the event loop; ``/readyz`` on a thread of its own (its
    checks, database and Redis round trips, on theirs), never on the request threads.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readiness")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in PATHS:
            return await self.app(scope, receive, send)
        if scope["path"] == "/healthz":
            status, body = answer("/healthz")
        else:
            detailed = not any(name == b"x-forwarded-for" for name, _ in scope.get("headers", ()))
            status, body = await asyncio.get_running_loop().run_in_executor(self.executor, answer, "/readyz", detailed)
        headers = [
            (b"content-type", b"application/json"),
            (b"cache-control", b"no-store"),
            (b"x-served-by", settings.HERD_REPLICA_ID.encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


class HealthCheckMiddleware:
    """Serves ``PATHS`` ahead of the rest of Django's stack: for Django's own test client
    and ``runserver``; a served replica answers them in ``HealthFront`` first."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path not in PATHS:
            return self.get_response(request)
        status, body = answer(request.path, detailed="HTTP_X_FORWARDED_FOR" not in request.META)
        response = JsonResponse(body, status=status)
        response["Cache-Control"] = "no-store"
        return response
