"""Liveness (``/healthz``), readiness (``/readyz``) and draining after SIGTERM.

Readiness requires the state Redis and a database to read: the primary, or, while it is
unreachable, a healthy replica (read-only mode). The cache, shards and the replicas
otherwise are reported, not required: a store every web replica shares never takes
them all out. ``HealthFront`` answers probes on the event loop, before Django's request
threads. The rules and why: docs/OPERATIONS.md.
"""

from __future__ import annotations

import asyncio
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


def readiness() -> tuple[bool, dict[str, str]]:
    """Whether this replica should take traffic, and what each dependency said."""
    state = _check_redis("state")
    primary = _check_primary(PRIMARY)
    optional = {"redis:cache": _check_redis("default")}
    for alias in replica_aliases():
        status = replica_health.check(alias)
        optional[f"database:{alias}"] = "ok" if status.healthy else f"error: {status.error or 'lagging'}"
    # A shard that is down fails its users' writes (jobs, notifications), not the whole replica.
    for alias in settings.SHARD_DATABASES:
        optional[f"database:{alias}"] = _check_primary(alias)
    # Without the primary, a healthy replica serves reads (read-only mode): the primary is
    # shared by every web replica, and failing them all for it would turn reads away too.
    readable = primary == "ok" or any(optional[f"database:{alias}"] == "ok" for alias in replica_aliases())
    ready = not is_draining() and state == "ok" and readable
    checks = {
        "draining": "yes" if is_draining() else "no",
        "database:default": primary,
        "redis:state": state,
        **optional,
    }
    return ready, checks


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

    ``/healthz`` is answered on the event loop; ``/readyz``'s checks (database and Redis
    round trips) run on one thread of their own, never on the request threads.
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
