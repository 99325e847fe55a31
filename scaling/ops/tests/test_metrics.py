"""/metrics: only for allowed addresses and staff; its counters move with real requests,
cache lookups, database statements and queue messages (real PostgreSQL, Redis, RabbitMQ)."""

from __future__ import annotations

import ipaddress
import json
import re
import time
import uuid
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from accounts import services as accounts_services
from catalog import services as catalog_services
from jobs.tasks import run_job
from scaling.ops import metrics

pytestmark = pytest.mark.django_db(databases="__all__")

OUTSIDE = "203.0.113.7"  # TEST-NET-3: never in the allow-list


@pytest.fixture
def staff_client():
    user = accounts_services.create_user(username="operator", email="op@example.com", password="x-long-password-42")
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    client = Client()
    client.force_login(user)
    return client


def scrape(client: Client, **extra) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200
    values = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: dict, name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted({"replica": settings.HERD_REPLICA_ID, **labels}.items()))), 0.0)


def test_an_address_outside_the_allow_list_gets_a_404_without_data(client):
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert response.status_code == 404
    assert b"herd_" not in response.content


def test_a_forwarded_for_header_does_not_make_an_outside_address_allowed(client):
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert response.status_code == 404


def test_a_logged_in_shopper_outside_the_allow_list_gets_a_404():
    shopper = accounts_services.create_user(username="shopper", email="s@example.com", password="x-long-password-42")
    client = Client()
    client.force_login(shopper)
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 404


def test_staff_read_metrics_from_anywhere_and_no_cache_keeps_them(staff_client):
    response = staff_client.get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
    assert b"herd_http_requests_total" in response.content


@pytest.mark.parametrize("address", ["127.0.0.1", "10.20.30.40", "192.168.1.2", "::1"])
def test_an_address_in_the_allow_list_reads_metrics_without_logging_in(client, address):
    assert client.get("/metrics", REMOTE_ADDR=address).status_code == 200


def test_the_allow_list_comes_from_the_setting(client, settings):
    settings.HERD_METRICS_ALLOWED_CIDRS = [ipaddress.ip_network("192.0.2.0/24")]
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 404
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.9").status_code == 200


POD_HOST = "10.128.2.17:8000"  # a pod IP and port, as Prometheus sends it; not in ALLOWED_HOSTS


def test_an_allowed_network_scrapes_a_pod_by_its_ip_as_host(client):
    response = client.get("/metrics", HTTP_HOST=POD_HOST, REMOTE_ADDR="10.131.0.9")
    assert response.status_code == 200
    assert b"herd_http_requests_total" in response.content
    # The scrape is counted as the metrics view, not as an unresolved path.
    before = value(scrape(client), "herd_http_requests_total", view="metrics", method="GET", status="200")
    client.get("/metrics", HTTP_HOST=POD_HOST, REMOTE_ADDR="10.131.0.9")
    after = value(scrape(client), "herd_http_requests_total", view="metrics", method="GET", status="200")
    assert after == before + 2  # that scrape and the first of these two


def test_a_pod_ip_host_is_still_refused_for_pages_and_for_outside_addresses(client):
    assert client.get("/robots.txt", HTTP_HOST=POD_HOST, REMOTE_ADDR="10.131.0.9").status_code == 400
    response = client.get("/metrics", HTTP_HOST=POD_HOST, REMOTE_ADDR=OUTSIDE)
    assert response.status_code == 400
    assert b"herd_" not in response.content


def test_request_counters_move_per_view(client):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/robots.txt").status_code == 200
    client.get("/no-such-page/")
    after = scrape(client)
    labels = {"view": "robots-txt", "method": "GET", "status": "200"}
    assert value(after, "herd_http_requests_total", **labels) - value(before, "herd_http_requests_total", **labels) == 3
    missing = {"view": "unresolved", "method": "GET", "status": "404"}
    assert (
        value(after, "herd_http_requests_total", **missing) - value(before, "herd_http_requests_total", **missing) == 1
    )
    count = "herd_http_request_duration_seconds_count"
    assert value(after, count, view="robots-txt") - value(before, count, view="robots-txt") == 3


@pytest.mark.django_db(transaction=True, databases="__all__")  # committed: the cache serves committed rows only
def test_cache_hits_and_misses_and_database_statements_are_counted(client):
    lamps = catalog_services.create_category(name="Lamps", slug="lamps")
    catalog_services.create_product(category=lamps, name="Desk lamp", slug="desk-lamp", price=10, stock=3)
    before = scrape(client)
    assert client.get("/p/desk-lamp/").status_code == 200  # built: misses
    middle = scrape(client)
    assert client.get("/p/desk-lamp/").status_code == 200  # served from the cache: hits
    after = scrape(client)

    def lookups(values, result):
        return sum(
            v
            for (name, labels), v in values.items()
            if name == "herd_cache_lookups_total" and ("result", result) in labels
        )

    assert lookups(middle, "miss") > lookups(before, "miss")
    assert lookups(after, "hit") > lookups(middle, "hit")
    assert lookups(after, "miss") == lookups(middle, "miss")
    reads = [(labels, v) for (name, labels), v in before.items() if name == "herd_db_statements_total"]
    assert reads, "no statement counted"
    statements_before = sum(v for _, v in reads)
    statements_middle = sum(v for (name, _), v in middle.items() if name == "herd_db_statements_total")
    assert statements_middle > statements_before


def test_replica_lag_is_exported_per_alias(client):
    values = scrape(client)
    assert value(values, "herd_replica_healthy", alias="replica1") == 1.0
    assert ("herd_replica_lag_bytes", (("alias", "replica1"), ("replica", settings.HERD_REPLICA_ID))) in values


def test_the_queue_depth_counts_messages_waiting_in_rabbitmq(client, monkeypatch):
    monkeypatch.setattr(metrics, "QUEUE_DEPTH_MAX_AGE", 0.0)
    before = value(scrape(client), "herd_queue_messages", queue="default")
    run_job.send(str(uuid.uuid4()))  # a job no worker here takes: it waits in the queue
    deadline = time.monotonic() + 5
    while value(scrape(client), "herd_queue_messages", queue="default") < before + 1:
        assert time.monotonic() < deadline, "the queue depth did not move"
        time.sleep(0.1)


def test_the_queue_depth_is_read_at_most_every_few_seconds(monkeypatch):
    fetched = []
    monkeypatch.setattr(metrics, "_queue_depths", (float("-inf"), {}))
    real = metrics._fetch_queue_depths
    monkeypatch.setattr(metrics, "_fetch_queue_depths", lambda: fetched.append(1) or real())
    metrics.queue_depths()
    metrics.queue_depths()
    assert len(fetched) == 1


BASE = Path(__file__).resolve().parents[3] / "deploy" / "k8s" / "base"


def monitoring_expressions() -> list[str]:
    """Every PromQL expression of the PrometheusRule and the Grafana dashboard."""
    documents = yaml.safe_load_all((BASE / "monitoring.yaml").read_text())
    rules = [doc for doc in documents if doc["kind"] == "PrometheusRule"]
    dashboard = json.loads((BASE / "grafana-dashboard.json").read_text())
    return [rule["expr"] for doc in rules for group in doc["spec"]["groups"] for rule in group["rules"]] + [
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    ]


def test_every_metric_the_alerts_and_the_dashboard_name_is_exported(client):
    client.get("/robots.txt")  # a request counted, so the request series exist
    exported = {name for name, _ in scrape(client)}
    named = {name for expr in monitoring_expressions() for name in re.findall(r"\bherd_[a-z_]+", expr)}
    assert {"herd_http_requests_total", "herd_replica_lag_seconds", "herd_queue_messages"} <= named
    assert named - exported == set()
