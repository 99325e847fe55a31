"""/healthz and /readyz: answered before sessions and host checks, 503 while draining."""

import asyncio
import json
import socket
import time

import pytest
from asgiref.testing import ApplicationCommunicator
from django.db import connections

from deploy.herd.profiles import PROFILES
from deploy.herd.services import Redis
from scaling.ops import health

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def draining(monkeypatch):
    event = health.threading.Event()
    event.set()
    monkeypatch.setattr(health, "_draining", event)


def test_healthz_answers_for_any_host_without_touching_the_session(client):
    response = client.get("/healthz", HTTP_HOST="10.1.2.3:8080")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}
    assert "Set-Cookie" not in response.headers
    assert response["Cache-Control"] == "no-store"


def test_readyz_reports_every_dependency(client):
    response = client.get("/readyz", HTTP_HOST="10.1.2.3:8080")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks == {
        "draining": "no",
        "database:default": "ok",
        "redis:state": "ok",
        "redis:cache": "ok",
        "database:replica1": "ok",
        "database:shard1": "ok",
        "database:shard2": "ok",
    }


def test_readyz_asked_through_a_proxy_says_only_ready_or_not(client, draining):
    """The public entry (it adds X-Forwarded-For) learns nothing of the databases and Redis."""
    response = client.get("/readyz", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready"}


def test_readyz_is_503_while_draining_but_healthz_stays_200(client, draining):
    assert client.get("/readyz").status_code == 503
    assert client.get("/readyz").json()["checks"]["draining"] == "yes"
    assert client.get("/healthz").status_code == 200


def test_readyz_stays_200_while_the_session_redis_is_down(client):
    # Shared by every replica: requiring it took them all out of HAProxy during a
    # Sentinel failover, anonymous pages too (the state-redis-failover drill).
    redis = Redis(PROFILES["test"], "state")
    redis.stop()
    try:
        response = client.get("/readyz")
    finally:
        redis.start()
    assert response.status_code == 200
    assert response.json()["checks"]["redis:state"].startswith("error")


def test_readyz_stays_200_while_the_cache_redis_is_down(client):
    redis = Redis(PROFILES["test"], "cache")
    redis.stop()
    try:
        response = client.get("/readyz")
    finally:
        redis.start()
    assert response.status_code == 200
    assert response.json()["checks"]["redis:cache"].startswith("error")


@pytest.fixture
def blackholed_shard():
    """Shard ``shard2`` moved, for the checks' new connections, to a server that accepts
    connections and never answers (a listening socket nobody reads: a partitioned or hung
    PostgreSQL); put back after, and waited for until its check answers ``ok`` again."""
    alias = "shard2"
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    params = connections.settings[alias]  # the dict every thread's connection reads
    real = (params["HOST"], params["PORT"])
    params["HOST"], params["PORT"] = "127.0.0.1", listener.getsockname()[1]
    # The check's thread keeps its connection: close it, so its next check connects anew.
    health._checks[f"database:{alias}"].submit(lambda: connections[alias].close()).result(5)
    try:
        yield alias
    finally:
        params["HOST"], params["PORT"] = real
        listener.close()  # the hung connects are reset now
        until = time.monotonic() + 15
        while health.readiness()[1][f"database:{alias}"] != "ok" and time.monotonic() < until:
            time.sleep(0.2)


def test_readyz_answers_within_its_deadline_with_a_shard_that_never_answers(client, settings, blackholed_shard):
    """A shard is not needed to be ready (its users' jobs fail, not the pages), and one
    hung shard must not make the probe time out: the checks share one deadline, well under
    the readinessProbe's timeoutSeconds (2 s)."""
    deadline = settings.HERD_READINESS_DEADLINE_SECONDS
    for attempt in range(2):  # the second time, the first check is still hanging
        started = time.monotonic()
        response = client.get("/readyz")
        took = time.monotonic() - started
        answer = response.json()["checks"][f"database:{blackholed_shard}"]
        print(f"/readyz with {blackholed_shard} blackholed, asked {attempt + 1}: {took:.2f}s, {answer!r}")
        assert response.status_code == 200
        assert answer.startswith("error")
        assert took < deadline + 0.5, f"/readyz took {took:.2f}s with a deadline of {deadline}s"


def test_every_response_names_its_replica(client, settings):
    assert client.get("/").headers["X-Served-By"] == settings.HERD_REPLICA_ID
    assert client.get("/no-such-page/").headers["X-Served-By"] == settings.HERD_REPLICA_ID
    assert client.get("/healthz").headers["X-Served-By"] == settings.HERD_REPLICA_ID


async def _get(app, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    communicator = ApplicationCommunicator(
        app, {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    )
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=5)
    body = await communicator.receive_output(timeout=5)
    return start["status"], dict(start["headers"]), body["body"]


def test_probes_are_answered_while_every_request_thread_is_busy(settings):
    """In a served replica the probes never reach the request threads: with all of them
    stuck on slow pages, the load balancer still hears that the replica is ready."""
    asyncio.run(_probe_past_a_stuck_app(settings.HERD_REPLICA_ID))


async def _probe_past_a_stuck_app(replica_id: str) -> None:
    stuck = asyncio.Event()
    passed = []

    async def every_thread_busy(scope, receive, send):
        passed.append(scope["path"])
        await stuck.wait()

    front = health.HealthFront(every_thread_busy)
    status, headers, body = await _get(front, "/readyz")
    assert status == 200
    assert json.loads(body)["checks"]["database:default"] == "ok"
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"x-served-by"] == replica_id.encode()
    status, _, body = await _get(front, "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "alive"})
    assert passed == []
    page = ApplicationCommunicator(
        front, {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    )
    await page.send_input({"type": "http.request", "body": b""})
    await asyncio.sleep(0.05)
    assert passed == ["/"]  # everything else goes to the app
    stuck.set()
    await page.wait(timeout=1)
