"""What the herd's processes did during a benchmark run: CPU time per component, cache lookups.

- ``cpu_seconds(herd)``: CPU time (user + system) each component of the herd has used so
  far, from ``/proc/<pid>/stat``: the app replicas, HAProxy, each PostgreSQL server (the
  postmaster, its live backends, and the backends it reaped), each Redis; plus the load
  generator (this process's reaped children: wrk). Two snapshots around a run, divided
  by the requests served, give CPU-ms per request per component.
- ``cache_lookups(herd)``: the ``herd_cache_lookups_total{cache, result}`` counters of
  every app replica, scraped from its ``/metrics`` (allowed from loopback), summed over
  replicas; None when the replicas do not export them (an older build).
- ``view_time(herd)``: each view's requests and seconds in Django so far (the
  ``herd_http_request_duration_seconds`` histogram's count and sum), summed over replicas;
  two snapshots (``view_delta``) say where a run's app time went.
- ``round_trips(herd)``: the statements each PostgreSQL server has run so far, by kind
  (connection checks, position checks, else the first word; ``pg_stat_statements``,
  these probes' own left out), and the commands each Redis
  has served, by name (``INFO commandstats``; ``INFO`` left out). Two snapshots around a
  run, divided by its requests (``per_request``), give what one request asks of each.
"""

from __future__ import annotations

import os
import re
import resource
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import psycopg
import redis

from deploy.herd.control import Herd
from deploy.herd.processes import read_pid
from deploy.herd.services import Postgres, Redis

TICKS = os.sysconf("SC_CLK_TCK")
LOAD_GENERATOR = "load generator (wrk)"
CACHE_METRIC = "herd_cache_lookups_total"
LATENCY_METRIC = "herd_http_request_duration_seconds"


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after it are plain.
    return text.rsplit(") ", 1)[1].split()


def _cpu(fields: list[str], reaped: bool) -> float:
    """utime + stime (fields 14, 15), plus cutime + cstime (16, 17) of reaped children."""
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def process_tree_cpu(pid: int | None) -> float:
    """CPU seconds of ``pid``, of the children it reaped, and of its live children."""
    if not pid:
        return 0.0
    fields = _stat(pid)
    if fields is None:
        return 0.0
    total = _cpu(fields, reaped=True)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            child = _stat(int(entry))
            if child is not None and child[1] == str(pid):
                total += _cpu(child, reaped=False)
    return total


def cpu_seconds(herd: Herd) -> dict[str, float]:
    """CPU seconds used so far by each component of ``herd`` and by the load generator."""
    usage = {"app replicas": sum(process_tree_cpu(web.pid()) for web in herd.webs())}
    usage["HAProxy"] = process_tree_cpu(read_pid(herd.haproxy().pidfile))
    usage["PostgreSQL primary"] = process_tree_cpu(Postgres(herd.profile, replica=False).pid())
    usage["PostgreSQL replica"] = process_tree_cpu(Postgres(herd.profile, replica=True).pid())
    for role in ("state", "cache"):
        usage[f"Redis {role}"] = process_tree_cpu(Redis(herd.profile, role).pid())
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    usage[LOAD_GENERATOR] = children.ru_utime + children.ru_stime
    return usage


def cpu_ms_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    return {name: (after[name] - before[name]) * 1000 / max(requests, 1) for name in after}


def _labels(text: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', text))


def _samples(herd: Herd, metric: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """Every sample whose name matches the pattern ``metric``, on every replica's /metrics
    (one scrape each): (name, labels, value); a replica that does not answer is left out."""
    for web in herd.webs():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web.port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            continue
        for match in re.finditer(rf"^({metric})\{{([^}}]*)\}}\s+(\S+)$", text, re.MULTILINE):
            yield match.group(1), _labels(match.group(2)), float(match.group(3))


def cache_lookups(herd: Herd) -> dict[str, dict[str, float]] | None:
    """{cache: {"hit": n, "miss": n}} over every replica, or None without the metrics."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: {"hit": 0.0, "miss": 0.0})
    found = False
    for _, labels, value in _samples(herd, CACHE_METRIC):
        if labels.get("result") in ("hit", "miss"):
            totals[labels.get("cache", "?")][labels["result"]] += value
            found = True
    return dict(totals) if found else None


def view_time(herd: Herd) -> dict[str, tuple[float, float]]:
    """{view: (requests, seconds in Django)} so far, summed over every replica (the request
    latency histogram's ``_count`` and ``_sum``)."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for name, labels, value in _samples(herd, f"{LATENCY_METRIC}_(?:count|sum)"):
        totals[labels.get("view", "?")][name.endswith("_sum")] += value
    return {view: (count, seconds) for view, (count, seconds) in totals.items()}


def view_delta(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    """{view: (requests, seconds in Django)} between two ``view_time`` snapshots."""
    delta = {}
    for view, (count, seconds) in after.items():
        earlier_count, earlier_seconds = before.get(view, (0.0, 0.0))
        if count > earlier_count:
            delta[view] = (count - earlier_count, seconds - earlier_seconds)
    return delta


def hit_ratios(
    before: dict[str, dict[str, float]] | None, after: dict[str, dict[str, float]] | None
) -> dict[str, tuple[float, int]] | None:
    """{cache: (hits / lookups, lookups)} between two scrapes; None without the metrics."""
    if before is None or after is None:
        return None
    ratios = {}
    for cache, counts in sorted(after.items()):
        earlier = before.get(cache, {"hit": 0.0, "miss": 0.0})
        hits = counts["hit"] - earlier["hit"]
        lookups = hits + counts["miss"] - earlier["miss"]
        if lookups > 0:
            ratios[cache] = (hits / lookups, round(lookups))
    return ratios


# A statement's kind: Django's connection check (``CONN_HEALTH_CHECKS``: ``SELECT 1`` on
# each pooled connection's first use in a request), a WAL-position or replica check, else
# its first word.
_STATEMENT_KIND = (
    "CASE WHEN query ~* '^SELECT (\\$1|1)$' THEN 'connection check'"
    " WHEN query ILIKE '%pg_%lsn%' OR query ILIKE '%pg_is_in_recovery%' THEN 'position check'"
    " ELSE upper(split_part(ltrim(query), ' ', 1)) END"
)


def round_trips(herd: Herd) -> dict[str, dict[str, float]]:
    """{server: {statement's first word or Redis command: calls so far}} for each
    PostgreSQL server and each Redis of ``herd``."""
    counts: dict[str, dict[str, float]] = {}
    for role, replica in (("primary", False), ("replica", True)):
        port = Postgres(herd.profile, replica=replica).port
        with psycopg.connect(host="127.0.0.1", port=port, user="herd", dbname="herd", autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT {_STATEMENT_KIND}, sum(calls) FROM pg_stat_statements"
                " WHERE query NOT ILIKE '%pg_stat_statements%' GROUP BY 1"
            ).fetchall()
        counts[f"PostgreSQL {role}"] = {word: float(calls) for word, calls in rows}
    for role in ("state", "cache"):
        client = redis.Redis(host="127.0.0.1", port=Redis(herd.profile, role).port)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        counts[f"Redis {role}"] = {
            name.removeprefix("cmdstat_").upper(): float(value["calls"])
            for name, value in stats.items()
            if name != "cmdstat_info"
        }
    return counts


def per_request(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], requests: int
) -> dict[str, dict[str, float]]:
    """What each server did per request between two ``round_trips`` snapshots (a counter
    that went down, reset in between, counts from zero)."""
    result = {}
    for server, calls in after.items():
        earlier = before.get(server, {})
        result[server] = {
            what: (n - earlier.get(what, 0.0) if n >= earlier.get(what, 0.0) else n) / max(requests, 1)
            for what, n in calls.items()
            if n != earlier.get(what, 0.0)
        }
    return result
