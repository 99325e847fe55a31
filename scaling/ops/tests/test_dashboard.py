"""The operations dashboard: staff only; its data merges the snapshots every replica published."""

from __future__ import annotations

import time
import uuid

import pytest

from accounts.tests.factories import logged_in_client, make_user
from jobs.models import Job
from scaling.ops import dashboard, metrics
from scaling.sharding import shards

pytestmark = pytest.mark.django_db(databases="__all__")


def logged_in(username: str, *, staff: bool) -> tuple:
    user = make_user(username, is_staff=staff)
    return user, logged_in_client(user)


def snapshot_of(replica: str, cache: str, *, requests: int, hits: int, misses: int, published_at=None) -> dict:
    return {
        "replica": replica,
        "published_at": published_at or time.time(),
        "requests": {"catalog:product": requests},
        "errors": 0,
        "latency_sum": requests * 0.004,
        "latency_count": requests,
        "caches": {cache: {"hit": hits, "miss": misses}},
        "statements": {"replica1": {"read": requests, "write": 0}},
        "replica_lag": {"replica1": {"healthy": True, "lag_seconds": 0.1 * requests, "lag_bytes": 0}},
        "sockets": 2,
    }


@pytest.mark.parametrize("path", ["/ops/", "/ops/data.json"])
def test_anonymous_visitors_and_shoppers_are_sent_to_log_in(client, path):
    _, shopper = logged_in("shopper", staff=False)
    for visitor in (client, shopper):
        response = visitor.get(path)
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]
        assert b"replicas" not in response.content


def test_staff_see_the_page_that_draws_the_data():
    _, staff = logged_in("operator", staff=True)
    response = staff.get("/ops/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-source="/ops/data.json"' in page
    assert "scaling/ops." in page  # the drawing script, by its hashed name
    assert "no-store" in response["Cache-Control"]


def test_the_data_merges_the_snapshots_of_two_replicas():
    run = uuid.uuid4().hex[:8]
    cache = f"test-cache-{run}"
    metrics.publish_snapshot(snapshot_of(f"web-a-{run}", cache, requests=30, hits=9, misses=1))
    metrics.publish_snapshot(snapshot_of(f"web-b-{run}", cache, requests=10, hits=1, misses=9))
    _, staff = logged_in("operator", staff=True)

    response = staff.get("/ops/data.json")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    data = response.json()
    replicas = {r["replica"]: r for r in data["replicas"]}
    assert replicas[f"web-a-{run}"]["requests"] == 30
    assert replicas[f"web-b-{run}"]["requests"] == 10
    assert replicas[f"web-a-{run}"]["mean_ms"] == 4.0
    assert data["caches"][cache] == {"hit": 10, "miss": 10, "ratio": 0.5}
    assert data["replica_lag"]["replica1"]["lag_seconds"] >= 3.0  # the worst either replica saw
    assert data["statements"]["replica1"]["read"] >= 40
    assert "default" in data["queues"]


def test_a_replica_that_stopped_publishing_drops_out():
    run = uuid.uuid4().hex[:8]
    metrics.publish_snapshot(
        snapshot_of(f"gone-{run}", "c", requests=1, hits=0, misses=0, published_at=time.time() - 600)
    )
    _, staff = logged_in("operator", staff=True)
    names = [r["replica"] for r in staff.get("/ops/data.json").json()["replicas"]]
    assert f"gone-{run}" not in names


def test_the_serving_replica_publishes_its_own_snapshot(settings):
    _, staff = logged_in("operator", staff=True)
    staff.get("/robots.txt")
    time.sleep(settings.HERD_OPS_PUBLISH_SECONDS)
    data = staff.get("/ops/data.json").json()
    mine = {r["replica"]: r for r in data["replicas"]}[settings.HERD_REPLICA_ID]
    assert mine["requests"] >= 1
    assert mine["age_seconds"] < settings.HERD_OPS_PUBLISH_SECONDS + 1


def test_jobs_in_progress_are_counted(monkeypatch):
    monkeypatch.setattr(dashboard, "PANEL_MAX_AGE", 0.0)
    owner, staff = logged_in("operator", staff=True)
    with shards.writing_for_user(owner.pk) as alias:
        for state in (Job.State.RUNNING, Job.State.QUEUED, Job.State.QUEUED, Job.State.SUCCEEDED):
            Job.objects.using(alias).create(owner_id=owner.pk, kind="catalog_export", state=state)
    assert staff.get("/ops/data.json").json()["jobs"] == {"queued": 2, "running": 1}


def test_a_registered_panel_is_drawn_and_served(monkeypatch):
    monkeypatch.setattr(dashboard, "_panels", {})
    monkeypatch.setattr(dashboard, "_fetched", {})
    dashboard.register_panel("widgets", lambda: {"blue": 3}, "Widgets made")
    with pytest.raises(ValueError):
        dashboard.register_panel("replicas", dict)
    _, staff = logged_in("operator", staff=True)
    page = staff.get("/ops/").content.decode()
    assert 'data-panel="widgets"' in page and "Widgets made" in page
    assert staff.get("/ops/data.json").json()["widgets"] == {"blue": 3}
