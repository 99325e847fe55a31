"""``make bench``: the whole benchmark suite on one bench herd, written into docs/PERFORMANCE.md.

Runs, in one session of the ``bench`` herd (bench/catalog.py prepares it):

1. bench/catalog.py: the minimal view, the warm product page (edge cache, app), the
   browse-heavy mix under Herd's configuration and the conventional single-server
   Django's (with replica offload and cache hit ratios), keyset pagination;
2. bench/replicas.py: throughput for 1 to 4 app replicas and the CPU cost model;
3. bench/growth.py: list, detail and search latency at 10,000 and 1,000,000 products;
4. bench/jobs.py: job throughput, completion-to-socket latency, sockets per replica;
5. bench/shards.py, when present: notification writes with one and two shard databases.

A part that fails is reported as failed (its traceback in
``.herd/bench/logs/report.log``) and the others still run. The report replaces what
lies between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` in docs/PERFORMANCE.md
(the prose around it is written by hand) and draws its charts into docs/perf/.
``BENCH_REPORT`` writes elsewhere (charts in a ``perf`` folder beside it).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import catalog, growth, replicas
from bench.wrk import Run, wrk_version
from deploy.doc_blocks import provenance, replace_block
from deploy.herd.control import Herd
from deploy.herd.debian import postgres_bindir

try:
    from bench import shards
except ImportError:
    shards = None

ROOT = Path(__file__).resolve().parent.parent

REPORT = Path(os.environ.get("BENCH_REPORT", ROOT / "docs" / "PERFORMANCE.md"))
CHARTS = REPORT.parent / "perf"
LOG = catalog.PROFILE.logs / "report.log"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
DEFAULTS = {"BENCH_ROUNDS": "3", "BENCH_DURATION": "8s", "BENCH_PRODUCTS": "1000000"}
HERD_COLOR, CONVENTIONAL_COLOR = "#2b6cb0", "#a0aec0"


@dataclass
class Part:
    """One part of the suite: its figures, or why it failed."""

    name: str
    value: Any = None
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error


def attempt(name: str, measure: Callable[[], Any]) -> Part:
    print(f"== {name}", flush=True)
    started = time.monotonic()
    try:
        value = measure()
    except Exception as error:  # one failed part must not lose the others
        LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(LOG, "a") as log:
            log.write(f"--- {datetime.now(UTC):%Y-%m-%d %H:%M:%S} {name}\n{traceback.format_exc()}\n")
        line = (str(error).strip().splitlines() or [""])[0]
        print(f"   failed: {type(error).__name__}: {line} (traceback in {LOG})", flush=True)
        return Part(name, error=f"{type(error).__name__}: {line}"[:300], seconds=time.monotonic() - started)
    seconds = time.monotonic() - started
    print(f"   done in {seconds:.0f} s", flush=True)
    return Part(name, value, seconds=seconds)


# --------------------------------------------------------------------------- the machine


def _first_line(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "n/a"
    return ((result.stdout or result.stderr).strip().splitlines() or ["n/a"])[0]


def _package(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "n/a"


def machine() -> list[tuple[str, str]]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal")), 0)
    bindir = postgres_bindir()
    return [
        ("host", f"{platform.node()}, {platform.system()} {platform.release()} ({platform.machine()})"),
        ("CPU", f"{os.cpu_count()} cores (os.cpu_count()){', ' + model if model else ''}"),
        ("memory", f"{mem_kb / 1024 / 1024:.1f} GiB"),
        ("Python", platform.python_version()),
        (
            "Django, uvicorn, psycopg, Channels, Dramatiq",
            ", ".join(_package(p) for p in ("django", "uvicorn", "psycopg", "channels", "dramatiq")),
        ),
        ("PostgreSQL", _first_line([str(bindir / "postgres"), "--version"]) if bindir else "n/a"),
        ("Redis", _first_line(["redis-server", "--version"])),
        ("HAProxy", _first_line(["haproxy", "-v"])),
        ("RabbitMQ", _first_line(["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"])),
        ("load generator", f"{wrk_version()} (-t1, its own process)"),
    ]


# --------------------------------------------------------------------------- rendering


def _runs_table(rows: list[tuple[str, Run]]) -> list[str]:
    lines = ["| case | req/s | p50 ms | p99 ms | failed |", "|---|---:|---:|---:|---:|"]
    for name, run in rows:
        lines.append(f"| {name} | {run.rps:.0f} | {run.p50_ms:.2f} | {run.p99_ms:.2f} | {run.errors} |")
    return lines


def _chart(name: str, draw: Callable[[], None]) -> str:
    """Draw one chart into CHARTS/name; its Markdown image line (or why it is missing)."""
    CHARTS.mkdir(parents=True, exist_ok=True)
    try:
        draw()
        plt.tight_layout()
        plt.savefig(CHARTS / name, dpi=110)
    except Exception as error:  # a chart that fails leaves its table
        return f"(chart {name} failed: {type(error).__name__}: {error})"
    finally:
        plt.close("all")
    return f"![{name.removesuffix('.png')}]({CHARTS.name}/{name})"


def _failed(part: Part) -> list[str]:
    return [f"**Failed**: {part.error} (traceback in `.herd/bench/logs/report.log`).", ""]


def render_catalog(part: Part) -> list[str]:
    lines = ["### Herd against the conventional single-server Django (bench/catalog.py)", ""]
    if not part.ok:
        return lines + _failed(part)
    figures: catalog.CatalogFigures = part.value
    herd, conventional = figures.mixes["Herd"], figures.mixes["conventional"]
    lines += [
        "The same app replicas, HAProxy and services, configured through the environment only. "
        "**Herd**: reads on the streaming replica, query and object caches, sessions in Redis, "
        "HAProxy's edge cache. **Conventional**: one database (`DATABASE_REPLICA_URLS` empty), "
        "no caches (`HERD_CACHES_ENABLED=false`), sessions in the database "
        "(`HERD_SESSION_ENGINE=database`), every request past the edge cache. The browse-heavy mix: "
        f"product pages with Zipf popularity over 5,000 products (rank r viewed in proportion to 1/r), "
        f"category and list pages, searches; 1 in 5 requests by one of "
        f"{figures.settings['users']} logged-in shoppers (logged in again under each configuration), "
        "1 in 50 of those a review post.",
        "",
        *_runs_table([("mix, Herd", herd), ("mix, conventional", conventional)]),
        "",
        f"- Herd / conventional: **{herd.rps / conventional.rps:.2f}x** the requests/s; "
        f"p50 **{herd.p50_ms / conventional.p50_ms:.2f}x**, p99 **{herd.p99_ms / conventional.p99_ms:.2f}x**",
        "",
    ]

    def draw() -> None:
        _fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        left.bar(["Herd", "conventional"], [herd.rps, conventional.rps], color=[HERD_COLOR, CONVENTIONAL_COLOR])
        left.set_title("browse-heavy mix: requests/s")
        xs = range(2)
        right.bar([x - 0.2 for x in xs], [herd.p50_ms, herd.p99_ms], 0.4, label="Herd", color=HERD_COLOR)
        right.bar(
            [x + 0.2 for x in xs],
            [conventional.p50_ms, conventional.p99_ms],
            0.4,
            label="conventional",
            color=CONVENTIONAL_COLOR,
        )
        right.set_xticks(list(xs), ["p50", "p99"])
        right.set_title("latency, ms")
        right.legend()

    lines += [_chart("herd-vs-conventional.png", draw), ""]

    pages = figures.pages
    ceiling, cold = pages["minimal view (app)"], pages["product page, conventional (no caches)"]
    edge, warm = pages["warm product page, edge cache"], pages["warm product page (app)"]
    lines += [
        "### The ceiling: a minimal view, and the warm product page against it",
        "",
        "`/robots.txt` through the whole middleware stack is the most the stack serves; the warm "
        "product page (anonymous) is measured as deployed (from HAProxy's edge cache) and from the "
        "app (`Cache-Control: no-cache` sends it past the edge, to the object cache).",
        "",
        *_runs_table(list(pages.items())),
        "",
        f"- warm product page from the app / minimal view: **{warm.rps / ceiling.rps:.2f}** of the ceiling; "
        f"/ no caches: **{warm.rps / cold.rps:.2f}x**",
        f"- warm product page from the edge cache / minimal view: **{edge.rps / ceiling.rps:.2f}**; "
        f"/ no caches: **{edge.rps / cold.rps:.2f}x**",
        "",
    ]

    def draw_pages() -> None:
        plt.figure(figsize=(8, 2.8))
        names = list(pages)
        plt.barh(names[::-1], [pages[n].rps for n in names][::-1], color=HERD_COLOR)
        plt.xlabel("requests/s")
        plt.title("pages through HAProxy")

    lines += [_chart("pages.png", draw_pages), ""]

    share = "n/a" if figures.replica_share is None else f"{figures.replica_share:.1%}"
    lines += [
        "### Replica offload and cache hit ratios during the mix (Herd)",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| SELECTs that ran on the replica (pg_stat_statements; health, LSN and FOR UPDATE reads left out) "
        f"| {share} |",
    ]
    if figures.cache_hits is None:
        lines.append("| cache hit ratio (`herd_cache_lookups_total` on each replica's /metrics) | n/a |")
    else:
        for cache, (ratio, lookups) in figures.cache_hits.items():
            lines.append(f"| cache hit ratio, {cache} ({lookups:,} lookups in a round) | {ratio:.1%} |")
    lines.append("")
    if figures.primary_selects:
        lines += ["The app's SELECTs still on the primary, most called (last round):", ""]
        lines += [f"- {calls:,} calls: `{query}`" for calls, query in figures.primary_selects]
        lines.append("")

    first, deep = figures.keyset.values()
    targets = [
        ("warm product page (app) ≥ 80% of the minimal view's req/s", warm.rps / ceiling.rps, 0.8, "{:.0%}"),
        ("warm product page (app) ≥ 5x the uncached page", warm.rps / cold.rps, 5.0, "{:.2f}x"),
        ("≥ 95% of SELECTs on the replica in the mix", figures.replica_share, 0.95, "{:.1%}"),
    ]
    lines += [
        "### Keyset pagination at depth (wrk -c4, from the app)",
        "",
        *_runs_table(list(figures.keyset.items())),
        "",
        f"- p50 at page {figures.deep_page:,} / p50 at page 1: **{deep.p50_ms / first.p50_ms:.2f}**",
        "",
        "### Targets from the catalog issue",
        "",
        "| target | measured | met |",
        "|---|---:|---|",
    ]
    for name, value, goal, shown in targets:
        met = "n/a" if value is None else ("yes" if value >= goal else "no")
        lines.append(f"| {name} | {'n/a' if value is None else shown.format(value)} | {met} |")
    ratio = deep.p50_ms / first.p50_ms
    lines += [
        f"| list page {figures.deep_page:,} p50 within 1.5x of page 1 | {ratio:.2f}x "
        f"| {'yes' if ratio <= 1.5 else 'no'} |",
        "",
    ]
    return lines


def render_replicas(part: Part) -> list[str]:
    cores = os.cpu_count() or 1
    lines = [f"### Throughput by app replicas ({cores} cores, os.cpu_count()) (bench/replicas.py)", ""]
    if not part.ok:
        return lines + _failed(part)
    figures: replicas.ReplicaFigures = part.value
    cases = replicas.CASES
    lines += [
        "| app replicas | " + " | ".join(f"{c}: req/s | p99 ms" for c in cases) + " |",
        "|---:|" + "---:|---:|" * len(cases),
    ]
    for point in figures.points:
        cells = " | ".join(f"{point.runs[c].rps:.0f} | {point.runs[c].p99_ms:.1f}" for c in cases)
        lines.append(f"| {point.replicas} | {cells} |")
    lines.append("")

    def draw() -> None:
        plt.figure(figsize=(7, 3.6))
        counts = [p.replicas for p in figures.points]
        for case, color in zip(cases, (HERD_COLOR, "#dd6b20"), strict=True):
            plt.plot(counts, [p.runs[case].rps for p in figures.points], "o-", label=case, color=color)
            model = figures.models[case]
            plt.axhline(
                model.predicted_rps(figures.cores, with_load_generator=True),
                linestyle="--",
                color=color,
                linewidth=1,
                label=f"model, {figures.cores} cores shared with wrk",
            )
        plt.xticks(counts)
        plt.xlabel("app replicas")
        plt.ylabel("requests/s")
        plt.ylim(bottom=0)
        plt.title(f"throughput by app replicas ({figures.cores} cores)")
        plt.legend(fontsize=7)

    lines += [_chart("replicas.png", draw), ""]
    components = list(next(iter(figures.models.values())).cpu_ms)
    lines += [
        "#### The per-request cost model",
        "",
        "CPU-ms per request in each component, from `/proc/<pid>/stat` (user + system time) before "
        "and after every run, divided by the requests served; medians over every replica count and round:",
        "",
        "| component | " + " | ".join(cases) + " |",
        "|---|" + "---:|" * len(cases),
    ]
    for name in components:
        lines.append(f"| {name} | " + " | ".join(f"{figures.models[c].cpu_ms[name]:.2f}" for c in cases) + " |")
    lines.append(
        "| **server side (all but the load generator)** | "
        + " | ".join(f"**{figures.models[c].server_ms:.2f}**" for c in cases)
        + " |"
    )
    peak = {c: max(p.runs[c].rps for p in figures.points) for c in cases}
    lines += [
        "",
        "Throughput ~ cores x 1000 / (server-side CPU-ms per request); one replica, one Python "
        "process, uses about one core at most, so about cores x (app CPU-ms / server-side CPU-ms) "
        "replicas keep the cores busy. On this machine the load generator shares the cores, so its "
        "cost joins the sum:",
        "",
        "| case | predicted here (with wrk) | measured peak | "
        + " | ".join(f"{n} cores: req/s (replicas)" for n in replicas.PREDICT_CORES)
        + " |",
        "|---|---:|---:|" + "---:|" * len(replicas.PREDICT_CORES),
    ]
    for case in cases:
        model = figures.models[case]
        predictions = " | ".join(
            f"{model.predicted_rps(n):.0f} ({model.replicas_for(n)})" for n in replicas.PREDICT_CORES
        )
        lines.append(f"| {case} | {model.predicted_rps(figures.cores, True):.0f} | {peak[case]:.0f} | {predictions} |")
    lines += [
        "",
        f"On {figures.cores} cores the curve flattens as soon as the replicas, PostgreSQL, Redis, HAProxy "
        "and wrk together use every core: past that point another replica only adds contention. "
        "The predictions for more cores assume PostgreSQL and HAProxy use the added cores, "
        "bound the result by each Redis (single-threaded: at most 1000 / its CPU-ms requests/s), "
        "and assume the load comes from elsewhere.",
        "",
    ]

    def draw_costs() -> None:
        plt.figure(figsize=(8, 2.8))
        left = [0.0] * len(cases)
        for name in components:
            widths = [figures.models[c].cpu_ms[name] for c in cases]
            plt.barh(list(cases), widths, left=left, label=name)
            left = [a + b for a, b in zip(left, widths, strict=True)]
        plt.xlabel("CPU-ms per request")
        plt.legend(fontsize=7, loc="lower right")
        plt.title("where a request's CPU goes")

    lines += [_chart("cost-model.png", draw_costs), ""]
    return lines


def render_growth(part: Part) -> list[str]:
    lines = ["### Cost growth with data (bench/growth.py)", ""]
    if not part.ok:
        return lines + _failed(part)
    figures: growth.GrowthFigures = part.value
    small, big = list(figures.runs)
    lines += [
        "The same requests against two databases of the same herd, with the query and object caches "
        "off and past the edge cache, so each request runs its queries (a warm cached page runs "
        f"none at any size); wrk -c{growth.CONNECTIONS}.",
        "",
        f"| request | p50 ms, {figures.products[small]:,} | p99 ms, {figures.products[small]:,} "
        f"| p50 ms, {figures.products[big]:,} | p99 ms, {figures.products[big]:,} | p50 growth |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    kinds = list(figures.runs[small])
    for kind in kinds:
        a, b = figures.runs[small][kind], figures.runs[big][kind]
        lines.append(
            f"| {kind} | {a.p50_ms:.2f} | {a.p99_ms:.2f} | {b.p50_ms:.2f} | {b.p99_ms:.2f} "
            f"| {b.p50_ms / a.p50_ms:.2f}x |"
        )
    lines.append("")

    def draw() -> None:
        _fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        xs = range(len(kinds))
        for ax, label in zip(axes, ("p50_ms", "p99_ms"), strict=True):
            for offset, db, color in ((-0.2, small, CONVENTIONAL_COLOR), (0.2, big, HERD_COLOR)):
                values = [getattr(figures.runs[db][k], label) for k in kinds]
                ax.bar([x + offset for x in xs], values, 0.4, label=f"{figures.products[db]:,} products", color=color)
            ax.set_xticks(list(xs), kinds)
            ax.set_title(label.replace("_ms", ", ms"))
        axes[0].legend(fontsize=8)

    return [*lines, _chart("data-growth.png", draw), ""]


def render_jobs(part: Part) -> list[str]:
    lines = ["### Jobs and sockets (bench/jobs.py)", ""]
    if not part.ok:
        return lines + _failed(part)
    figures = part.value
    lines += [
        "| measure | value |",
        "|---|---:|",
        f"| no-op jobs per second through RabbitMQ and the worker (1 process x 4 threads; "
        f"median of 3 x {figures.pings}) | {figures.pings_per_second:.0f} |",
        f"| job completion commit to the browser's socket, p50 ({figures.jobs} jobs) "
        f"| {figures.latency_p50_ms:.0f} ms |",
        f"| job completion commit to the browser's socket, p99 | {figures.latency_p99_ms:.0f} ms |",
    ]
    for count, seconds in figures.sockets:
        shown = "failed" if seconds is None else f"{seconds * 1000:.0f} ms"
        lines.append(f"| one event to {count:,} sockets held by one replica | {shown} |")
    held = [count for count, seconds in figures.sockets if seconds is not None and seconds <= 1.0]
    lines += [
        "",
        f"- sockets one replica holds while one event still reaches all of them within 1 s: "
        f"**{max(held):,}**{' or more' if held and held[-1] == figures.sockets[-1][0] else ''}"
        if held
        else "- sockets per replica: no step delivered within 1 s",
        "",
    ]
    return lines


def render_shards(part: Part) -> list[str]:
    lines = ["### Shards (bench/shards.py)", ""]
    if not part.ok:
        return lines + _failed(part)
    value = part.value
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if not isinstance(value, dict):
        return [*lines, f"{value}", ""]
    lines += [
        f"{value['writers']} writer processes, {value['seconds']:g} s per round, median of {value['rounds']} rounds;"
        " both layouts are databases in the bench primary's one PostgreSQL server (see the notes below).",
        "",
        "| layout | notification writes/s |",
        "|---|---:|",
        f"| one shard database | {value['one_database']:,.0f} |",
        f"| two shard databases | {value['two_databases']:,.0f} |",
        f"| two / one | {value['two_databases'] / value['one_database']:.2f} |",
    ]
    return [*lines, ""]


def render(parts: dict[str, Part], about: list[tuple[str, str]], wall_seconds: float) -> str:
    short = {k: os.environ[k] for k, v in DEFAULTS.items() if os.environ.get(k, v) != v}
    lines = [
        BEGIN,
        "<!-- Written by bench/report.py (make bench): edit the prose outside these markers. -->",
        "",
        f"## Figures from `make bench`, {datetime.now(UTC):%Y-%m-%d}, commit {provenance()}",
        "",
    ]
    if short:
        settings = ", ".join(f"{k}={v}" for k, v in short.items())
        lines += [f"**A short run** ({settings}): a check that the suite works, not figures to publish.", ""]
    lines += [
        f"Every figure is a median over {catalog.ROUNDS} rounds of wrk -t1 for {catalog.DURATION} "
        f"(-c{catalog.CONNECTIONS} unless said), every ratio from the same run; the herd is the `bench` "
        f"profile ({catalog.REPLICAS} app replicas unless said, 1 worker). Suite wall time: "
        f"{wall_seconds / 60:.0f} min.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in about),
        "",
    ]
    lines += render_catalog(parts["catalog"])
    lines += render_replicas(parts["replicas"])
    lines += render_growth(parts["growth"])
    lines += render_jobs(parts["jobs"])
    if "shards" in parts:
        lines += render_shards(parts["shards"])
    lines += ["| part | wall time | result |", "|---|---:|---|"]
    for part in parts.values():
        lines.append(f"| {part.name} | {part.seconds:.0f} s | {'ok' if part.ok else 'failed'} |")
    return "\n".join([*lines, "", END])


def measure_jobs(herd: Herd) -> Any:
    catalog.configure(herd, catalog.HERD, replicas=catalog.REPLICAS)
    # Imported here: bench.jobs sets Django up in this process for the bench herd.
    from bench import jobs

    return jobs.measure(herd)


def main() -> int:
    started = time.monotonic()
    parts: dict[str, Part] = {}
    prepared = attempt("bench herd and catalog data", catalog.prepare)
    herd: Herd | None = prepared.value
    about = machine()
    if herd is None:
        for name in ("catalog", "replicas", "growth", "jobs"):
            parts[name] = Part(name, error=f"the bench herd did not come up: {prepared.error}")
    else:
        parts["catalog"] = attempt("catalog", lambda: catalog.measure(herd))
        sessions = parts["catalog"].value.sessions if parts["catalog"].ok else None
        parts["replicas"] = attempt("replicas", lambda: replicas.measure(herd, sessions))
        parts["growth"] = attempt("growth", lambda: growth.measure(herd))
        parts["jobs"] = attempt("jobs", lambda: measure_jobs(herd))
        if shards is not None:
            parts["shards"] = attempt("shards", lambda: shards.measure())
    block = render(parts, about, time.monotonic() - started)
    replace_block(REPORT, BEGIN, END, block)
    print(block)
    print(f"\nwritten: {REPORT} (charts in {CHARTS})")
    return 0 if all(part.ok for part in parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
