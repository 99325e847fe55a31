"""What this replica did, for Prometheus (``/metrics``) and the operations dashboard.

Series live in ``prometheus_client``'s in-process registry, each labelled ``replica``;
each replica also publishes a snapshot to the state Redis for ``/ops/``. The series,
who may scrape them and how the snapshots work: docs/OPERATIONS.md.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable

import pika
import pika.exceptions
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import resolve
from django_redis import get_redis_connection
from dramatiq import get_broker
from dramatiq.common import dq_name, xq_name
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from scaling.db.replicas import replica_health
from scaling.ops import logs

logger = logging.getLogger(__name__)

REPLICA = settings.HERD_REPLICA_ID
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter("herd_http_requests", "HTTP requests served.", ["replica", "view", "method", "status"])
LATENCY = Histogram(
    "herd_http_request_duration_seconds",
    "Time from the request reaching Django to its response.",
    ["replica", "view"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CACHE_LOOKUPS = Counter("herd_cache_lookups", "Query and object cache lookups.", ["replica", "cache", "result"])
CACHE_REDIS_CALLS = Counter(
    "herd_cache_redis_calls",
    "Calls to the cache Redis: sent, failed or slow (of those sent), skipped.",
    ["replica", "outcome"],
)
CACHE_BREAKER_OPEN = Gauge("herd_cache_breaker_open", "1 while this process skips the cache Redis.", ["replica"])
DB_STATEMENTS = Counter("herd_db_statements", "SQL statements run.", ["replica", "alias", "kind"])
SOCKETS = Gauge("herd_websockets_open", "WebSockets open on this replica.", ["replica"])

# Bound children by label values: ``labels()`` takes a lock and validates; a dict does not.
_children: dict[tuple, Callable] = {}


def _child(metric, *values: str):
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(REPLICA, *values)
    return child


# Series that alerts and the dashboard read exist from the start, at zero, rather than
# appearing with the first event (deploy/k8s/base/monitoring.yaml, grafana-dashboard.json).
_child(SOCKETS)
for _result in ("hit", "miss"):
    _child(CACHE_LOOKUPS, "query", _result)


# --------------------------------------------------------------------------- counting


def count_cache(cache: str, hit: bool) -> None:
    """One lookup of ``cache`` (``query``, or an object cache's kind); called by ``scaling.cache``."""
    _child(CACHE_LOOKUPS, cache, "hit" if hit else "miss").inc()
    record = logs.current()
    if record is not None:
        if hit:
            record.cache_hits += 1
        else:
            record.cache_misses += 1


def count_cache_redis_call(outcome: str) -> None:
    """``sent``, ``failed``, ``slow`` (answered, but it opened the breaker) or ``skipped``:
    called by ``scaling.cache.breaker``."""
    _child(CACHE_REDIS_CALLS, outcome).inc()


def cache_breaker_open(is_open: bool) -> None:
    _child(CACHE_BREAKER_OPEN).set(1.0 if is_open else 0.0)


def count_statements(execute, sql, params, many, context):
    """Execute wrapper on every connection: statements per alias, and the aliases a request used."""
    alias = context["connection"].alias
    kind = "read" if sql[:6] in ("SELECT", "select") else "write"
    _child(DB_STATEMENTS, alias, kind).inc()
    record = logs.current()
    if record is not None:
        record.aliases.add(alias)
    return execute(sql, params, many, context)


def socket_opened() -> None:
    _child(SOCKETS).inc()


def socket_closed() -> None:
    _child(SOCKETS).dec()


def _view_name(request: HttpRequest) -> str:
    match = request.resolver_match
    if match is not None:
        return match.view_name
    # WhiteNoise answers before URLs are resolved.
    return "static" if request.path.startswith(settings.STATIC_URL) else "unresolved"


def _user_id(request: HttpRequest) -> str | None:
    """The logged-in user's id if this request loaded its session anyway; never loads it."""
    session = getattr(request, "session", None)
    if session is None or not session.accessed:
        return None
    return session.get(SESSION_KEY)


class RequestMetricsMiddleware:
    """Counts and times each request, writes its log line, echoes its ``X-Request-ID``.

    Sits right after ``ServedByMiddleware``, so it times the whole stack and sees the
    final status. Health checks are neither counted nor logged, but let the replica
    publish its snapshot for the dashboard.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path in HEALTH_PATHS:
            response = self.get_response(request)
            maybe_publish_snapshot()
            return response
        request_id = logs.request_id_from(request.META.get("HTTP_X_REQUEST_ID"))
        token = logs.begin(request_id)
        try:
            response = self.get_response(request)
            method = request.method if request.method in _METHODS else "other"
            duration = logs.log_request(
                logs.current(),
                method=method,
                path=logs.loggable_path(request),
                status=response.status_code,
                user_id=_user_id(request),
            )
        finally:
            logs.end(token)
        view = _view_name(request)
        _child(REQUESTS, view, method, str(response.status_code)).inc()
        _child(LATENCY, view).observe(duration)
        response[logs.REQUEST_ID_HEADER] = request_id
        maybe_publish_snapshot()
        return response


# --------------------------------------------------------------------------- queue depth

QUEUE_DEPTH_MAX_AGE = 5.0
_queue_lock = threading.Lock()
_queue_depths: tuple[float, dict[str, int]] = (float("-inf"), {})


def _fetch_queue_depths() -> dict[str, int]:
    """Messages ready in each Dramatiq queue (and its delay and dead-letter queues):
    a passive ``queue_declare`` each, on a connection of its own, closed after."""
    queues = sorted(get_broker().get_declared_queues() | {"default"})
    parameters = pika.URLParameters(settings.BROKER_URL)
    parameters.socket_timeout = 2
    parameters.connection_attempts = 1
    connection = pika.BlockingConnection(parameters)
    depths = {}
    try:
        for queue in queues:
            for name in (queue, dq_name(queue), xq_name(queue)):
                channel = connection.channel()
                try:
                    depths[name] = channel.queue_declare(name, passive=True).method.message_count
                except pika.exceptions.ChannelClosedByBroker:
                    # Not declared yet: nothing was ever sent to it, so nothing waits in it.
                    if name == queue:
                        depths[name] = 0
                    continue
                channel.close()
    finally:
        connection.close()
    return depths


def queue_depths() -> dict[str, int]:
    """Each queue's ready messages, at most ``QUEUE_DEPTH_MAX_AGE`` seconds old; empty when unknown."""
    global _queue_depths
    with _queue_lock:
        fetched_at, depths = _queue_depths
        now = time.monotonic()
        if now - fetched_at >= QUEUE_DEPTH_MAX_AGE:
            try:
                depths = _fetch_queue_depths()
            except (pika.exceptions.AMQPError, OSError) as error:
                logger.warning("could not read the queue depths: %r", error)
                depths = {}
            _queue_depths = (now, depths)
        return depths


# --------------------------------------------------------------------------- /metrics


class _StateCollector(Collector):
    """Gauges read at scrape time: replica lag (checked if stale) and queue depth."""

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        labels = ["replica", "alias"]
        return (
            GaugeMetricFamily("herd_replica_lag_seconds", "Replay lag of a read replica, by time.", labels=labels),
            GaugeMetricFamily("herd_replica_lag_bytes", "Replay lag of a read replica, in WAL bytes.", labels=labels),
            GaugeMetricFamily("herd_replica_healthy", "1 while a read replica may serve reads.", labels=labels),
            GaugeMetricFamily("herd_queue_messages", "Messages ready in a job queue.", labels=["replica", "queue"]),
        )

    def describe(self):
        # Registering must not collect: that would query the databases at import.
        return self._families()

    def collect(self):
        replica_health.healthy_aliases()  # re-checks only what is older than the interval
        lag_seconds, lag_bytes, healthy, queue = self._families()
        for status in replica_health.statuses():
            healthy.add_metric([REPLICA, status.alias], 1.0 if status.healthy else 0.0)
            if status.lag_seconds is not None:
                lag_seconds.add_metric([REPLICA, status.alias], status.lag_seconds)
            if status.lag_bytes is not None:
                lag_bytes.add_metric([REPLICA, status.alias], status.lag_bytes)
        for name, count in queue_depths().items():
            queue.add_metric([REPLICA, name], count)
        yield from (lag_seconds, lag_bytes, healthy, queue)


REGISTRY.register(_StateCollector())


def _address(request: HttpRequest) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def from_allowed_network(request: HttpRequest) -> bool:
    """Whether the connection came from ``HERD_METRICS_ALLOWED_CIDRS`` (``REMOTE_ADDR``, never a header)."""
    address = _address(request)
    return address is not None and any(address in network for network in settings.HERD_METRICS_ALLOWED_CIDRS)


def may_read_metrics(request: HttpRequest) -> bool:
    """From an allowed address, or a logged-in staff member."""
    if from_allowed_network(request):
        return True
    user = getattr(request, "user", None)
    return user is not None and user.is_active and user.is_staff


def _metrics_response() -> HttpResponse:
    response = HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_PLAIN_0_0_4)
    response["Cache-Control"] = "private, no-store"
    return response


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus' text format, for allowed addresses and staff; a 404 for anyone else."""
    if not may_read_metrics(request):
        raise Http404
    return _metrics_response()


METRICS_PATH = "/metrics"


class PodMetricsMiddleware:
    """Answers ``/metrics`` from an allowed network whatever its ``Host``, ahead of the host
    check: Prometheus scrapes each pod by its IP (``Host: 10.128.2.17:8000``), which
    ``ALLOWED_HOSTS`` rightly refuses for pages. Anyone else, and every other path, goes
    on to Django's host validation and ``metrics_view`` (staff from anywhere)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == METRICS_PATH and request.method in ("GET", "HEAD") and from_allowed_network(request):
            request.resolver_match = resolve(METRICS_PATH)  # counted as the `metrics` view
            return _metrics_response()
        return self.get_response(request)


# --------------------------------------------------------------------------- snapshots

_SNAPSHOT_PREFIX = "herd:ops:snapshot:"
_SNAPSHOT_INDEX = "herd:ops:replicas"  # sorted set: replica id -> last publish time
_publish_lock = threading.Lock()
_next_publish = 0.0


def _snapshot_ttl() -> float:
    return max(5.0, 5 * settings.HERD_OPS_PUBLISH_SECONDS)


def _totals(metric, *label_names: str) -> dict[tuple[str, ...], float]:
    """The metric's samples in this process, summed by sample name and the values of ``label_names``."""
    totals: dict[tuple[str, ...], float] = {}
    for family in metric.collect():
        for sample in family.samples:
            key = (sample.name, *(sample.labels.get(name, "") for name in label_names))
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def snapshot() -> dict:
    """This replica's counters as plain JSON: what the dashboard merges."""
    requests: dict[str, float] = {}
    errors = 0.0
    for (name, view, status), value in _totals(REQUESTS, "view", "status").items():
        if name == "herd_http_requests_total":
            requests[view] = requests.get(view, 0.0) + value
            if status.startswith("5"):
                errors += value
    latency = _totals(LATENCY)
    caches: dict[str, dict[str, float]] = {}
    for (name, cache, result), value in _totals(CACHE_LOOKUPS, "cache", "result").items():
        if name == "herd_cache_lookups_total":
            caches.setdefault(cache, {"hit": 0.0, "miss": 0.0})[result] = value
    statements: dict[str, dict[str, float]] = {}
    for (name, alias, kind), value in _totals(DB_STATEMENTS, "alias", "kind").items():
        if name == "herd_db_statements_total":
            statements.setdefault(alias, {"read": 0.0, "write": 0.0})[kind] = value
    return {
        "replica": REPLICA,
        "published_at": time.time(),
        "requests": requests,
        "errors": errors,
        "latency_sum": latency.get(("herd_http_request_duration_seconds_sum",), 0.0),
        "latency_count": latency.get(("herd_http_request_duration_seconds_count",), 0.0),
        "caches": caches,
        "statements": statements,
        "replica_lag": {
            s.alias: {"healthy": s.healthy, "lag_seconds": s.lag_seconds, "lag_bytes": s.lag_bytes}
            for s in replica_health.statuses()
        },
        "sockets": _totals(SOCKETS).get(("herd_websockets_open",), 0.0),
    }


def publish_snapshot(data: dict | None = None) -> None:
    """Store a snapshot (this replica's, unless given) for ``read_snapshots``."""
    data = data or snapshot()
    redis = get_redis_connection("state")
    ttl = _snapshot_ttl()
    pipe = redis.pipeline(transaction=False)
    pipe.set(_SNAPSHOT_PREFIX + data["replica"], json.dumps(data), ex=int(ttl))
    pipe.zadd(_SNAPSHOT_INDEX, {data["replica"]: data["published_at"]})
    pipe.zremrangebyscore(_SNAPSHOT_INDEX, "-inf", time.time() - ttl)
    pipe.execute()


def maybe_publish_snapshot() -> None:
    """Publish if the last publish is older than ``HERD_OPS_PUBLISH_SECONDS``; one thread at a time."""
    global _next_publish
    now = time.monotonic()
    if now < _next_publish or not _publish_lock.acquire(blocking=False):
        return
    try:
        _next_publish = now + settings.HERD_OPS_PUBLISH_SECONDS
        publish_snapshot()
    except RedisError as error:
        logger.warning("could not publish the operations snapshot: %r", error)
    finally:
        _publish_lock.release()


def read_snapshots() -> list[dict]:
    """The latest snapshot of every replica that published recently, by replica id."""
    redis = get_redis_connection("state")
    replicas = [r.decode() for r in redis.zrangebyscore(_SNAPSHOT_INDEX, time.time() - _snapshot_ttl(), "+inf")]
    if not replicas:
        return []
    rows = redis.mget([_SNAPSHOT_PREFIX + replica for replica in sorted(replicas)])
    return [json.loads(row) for row in rows if row is not None]
