"""The operations dashboard, ``/ops/``: every replica's counters merged, live, for staff.

The page polls ``/ops/data.json`` every 2 seconds and draws it (``static/scaling/ops.js``,
no third-party code). The JSON merges the snapshots every replica published to the
state Redis (``scaling.ops.metrics.read_snapshots``), so it shows the whole herd whichever
replica answers; the queue depth and the count of unfinished jobs are asked by the
replica that answers, at most every few seconds.
"""

from __future__ import annotations

import threading
import time

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from jobs.selectors import unfinished_job_counts
from scaling.ops import metrics

JOB_COUNTS_MAX_AGE = 2.0
_jobs_lock = threading.Lock()
_job_counts: tuple[float, dict[str, int]] = (float("-inf"), {})


def _cached_job_counts() -> dict[str, int]:
    global _job_counts
    with _jobs_lock:
        fetched_at, counts = _job_counts
        if time.monotonic() - fetched_at >= JOB_COUNTS_MAX_AGE:
            counts = unfinished_job_counts()
            _job_counts = (time.monotonic(), counts)
        return counts


def merge(snapshots: list[dict]) -> dict:
    """One view of the herd from each replica's snapshot: per replica, and summed."""
    replicas = []
    caches: dict[str, dict[str, float]] = {}
    statements: dict[str, dict[str, float]] = {}
    replica_lag: dict[str, dict] = {}
    now = time.time()
    for snap in sorted(snapshots, key=lambda s: s["replica"]):
        count = snap["latency_count"]
        replicas.append(
            {
                "replica": snap["replica"],
                "requests": sum(snap["requests"].values()),
                "errors": snap["errors"],
                "mean_ms": round(1000 * snap["latency_sum"] / count, 2) if count else None,
                "sockets": snap["sockets"],
                "age_seconds": round(now - snap["published_at"], 1),
            }
        )
        for cache, counts in snap["caches"].items():
            merged = caches.setdefault(cache, {"hit": 0.0, "miss": 0.0})
            merged["hit"] += counts.get("hit", 0.0)
            merged["miss"] += counts.get("miss", 0.0)
        for alias, counts in snap["statements"].items():
            merged = statements.setdefault(alias, {"read": 0.0, "write": 0.0})
            merged["read"] += counts.get("read", 0.0)
            merged["write"] += counts.get("write", 0.0)
        # Each replica measures the database replicas itself: show the worst it saw.
        for alias, status in snap["replica_lag"].items():
            merged = replica_lag.setdefault(alias, {"healthy": True, "lag_seconds": None, "lag_bytes": None})
            merged["healthy"] = merged["healthy"] and status["healthy"]
            for field in ("lag_seconds", "lag_bytes"):
                if status[field] is not None:
                    merged[field] = max(merged[field] or 0, status[field])
    for counts in caches.values():
        lookups = counts["hit"] + counts["miss"]
        counts["ratio"] = counts["hit"] / lookups if lookups else None
    return {
        "replicas": replicas,
        "caches": caches,
        "statements": statements,
        "replica_lag": replica_lag,
        "sockets": sum(r["sockets"] for r in replicas),
    }


@never_cache
@staff_member_required
def ops_page(request: HttpRequest) -> HttpResponse:
    return render(request, "scaling/ops.html")


@never_cache
@staff_member_required
def ops_data(request: HttpRequest) -> JsonResponse:
    metrics.maybe_publish_snapshot()
    data = merge(metrics.read_snapshots())
    data["queues"] = metrics.queue_depths()
    data["jobs"] = _cached_job_counts()
    data["time"] = time.time()
    return JsonResponse(data)
