"""The operations dashboard, ``/ops/``: every replica's counters merged, live, for staff.

The page polls ``/ops/data.json`` every 2 seconds and draws it (``static/scaling/ops.js``,
no third-party code). The JSON merges the snapshots every replica published to the
state Redis (``scaling.ops.metrics.read_snapshots``), so it shows the whole herd whichever
replica answers; the queue depth and the registered panels are asked by the replica that
answers, the panels at most every ``PANEL_MAX_AGE`` seconds.

Apps add panels with ``register_panel(name, provider, title)`` in their ``AppConfig.ready``:
``provider()`` returns a number per label, shown under ``name`` in ``/ops/data.json`` and
drawn as one line per label (the dashboard names no app).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from scaling.ops import metrics

PANEL_MAX_AGE = 2.0
# The keys of /ops/data.json that the dashboard fills itself.
BUILT_IN = frozenset({"replicas", "caches", "statements", "replica_lag", "sockets", "queues", "time"})


@dataclass(frozen=True)
class Panel:
    name: str
    title: str
    provider: Callable[[], dict[str, float]]


_panels_lock = threading.Lock()
_panels: dict[str, Panel] = {}
_fetched: dict[str, tuple[float, object]] = {}


def register_panel(name: str, provider: Callable[[], dict[str, float]], title: str | None = None) -> None:
    """Draw ``provider()`` (a number per label, one line each) under ``title`` on the
    dashboard, and show it under ``name`` in ``/ops/data.json``."""
    if name in BUILT_IN or not name.replace("_", "").isalnum():
        raise ValueError(f"{name!r} cannot name a dashboard panel")
    with _panels_lock:
        _panels[name] = Panel(name, title or name.capitalize(), provider)
        _fetched.pop(name, None)


def panels() -> list[Panel]:
    with _panels_lock:
        return list(_panels.values())


def _panel_data() -> dict[str, object]:
    """Each panel's data, asked again once it is ``PANEL_MAX_AGE`` seconds old."""
    with _panels_lock:
        data = {}
        for name, panel in _panels.items():
            fetched_at, value = _fetched.get(name, (float("-inf"), None))
            if time.monotonic() - fetched_at >= PANEL_MAX_AGE:
                value = panel.provider()
                _fetched[name] = (time.monotonic(), value)
            data[name] = value
        return data


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
    return render(request, "scaling/ops.html", {"panels": panels()})


@never_cache
@staff_member_required
def ops_data(request: HttpRequest) -> JsonResponse:
    metrics.maybe_publish_snapshot()
    data = merge(metrics.read_snapshots())
    data["queues"] = metrics.queue_depths()
    data.update(_panel_data())
    data["time"] = time.time()
    return JsonResponse(data)
