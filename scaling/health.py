"""Liveness, readiness and draining.

``/healthz`` answers 200 while the process can serve at all: the kubelet restarts a
replica that stops answering it. ``/readyz`` answers 200 while this replica should
receive traffic, 503 otherwise: the load balancer and Kubernetes route by it.

Readiness requires what no request can do without: the primary and the session
Redis. Read replicas and the cache Redis are reported but not required, because the
router falls back to the primary and a cache miss is only slower; failing readiness
for them would take every replica out of the load balancer at once.

After SIGTERM the replica is *draining*: ``/readyz`` answers 503 so the load balancer
stops sending new requests, while requests in flight finish (``scaling.serve``).

Both answer before sessions, authentication or host validation run, so a probe may
come with a pod IP as its Host. ``/healthz`` touches nothing; ``/readyz`` costs a
``SELECT 1`` on the primary and on each shard database (reported, not required: a
shard down fails only its users' jobs and notifications), a lag check per replica and
a PING per Redis.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from scaling.replicas import PRIMARY, replica_aliases, replica_health

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


def readiness() -> tuple[bool, dict[str, str]]:
    """Whether this replica should take traffic, and what each dependency said."""
    required = {
        "database:default": _check_database(PRIMARY),
        "redis:sessions": _check_redis("sessions"),
    }
    optional = {"redis:cache": _check_redis("default")}
    for alias in replica_aliases():
        status = replica_health.check(alias)
        optional[f"database:{alias}"] = "ok" if status.healthy else f"error: {status.error or 'lagging'}"
    # A shard that is down fails its users' jobs and notifications, not the whole replica.
    for alias in settings.SHARD_DATABASES:
        optional[f"database:{alias}"] = _check_database(alias)
    ready = not is_draining() and all(value == "ok" for value in required.values())
    checks = {"draining": "yes" if is_draining() else "no", **required, **optional}
    return ready, checks


class HealthCheckMiddleware:
    """Serves ``/healthz`` and ``/readyz`` ahead of the rest of the stack."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/healthz":
            return self._no_store(JsonResponse({"status": "alive"}))
        if request.path == "/readyz":
            ready, checks = readiness()
            body = {"status": "ready" if ready else "not ready", "checks": checks}
            return self._no_store(JsonResponse(body, status=200 if ready else 503))
        return self.get_response(request)

    @staticmethod
    def _no_store(response: HttpResponse) -> HttpResponse:
        response["Cache-Control"] = "no-store"
        return response
