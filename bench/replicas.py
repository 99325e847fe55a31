"""Throughput for 1 to 4 app replicas (``BENCH_REPLICA_COUNTS``) on the bench herd, and the
per-request CPU cost of every component (``bench.probes.cpu_seconds``) behind it.

The model: a request costs ``c_i`` CPU-ms in component ``i``; with ``C`` cores throughput
is at most ``1000 * C / sum(c_i)``, one replica (one interpreter lock) at most
``1000 / c_app``, so about ``C * c_app / sum(c_i)`` replicas keep ``C`` cores busy.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import httpx
import matplotlib.pyplot as plt

from bench import catalog, probes
from bench.rendering import HERD_COLOR, Figures, Part, chart, failed
from bench.wrk import NO_EDGE_CACHE, Run, median_run, wrk
from deploy.herd.control import Herd

COUNTS = [int(n) for n in os.environ.get("BENCH_REPLICA_COUNTS", "1,2,3,4").split(",")]
PREDICT_CORES = (4, 8, 16)
CASES = ("warm product page (app)", "browse-heavy mix")
# Components that run on one core whatever the machine has.
SINGLE_CORE = ("Redis state", "Redis cache")


@dataclass
class CurvePoint:
    replicas: int
    runs: dict[str, Run]  # case -> median run


@dataclass
class CostModel:
    case: str
    cpu_ms: dict[str, float]  # component -> CPU-ms per request (median over every run)

    @property
    def server_ms(self) -> float:
        return sum(ms for name, ms in self.cpu_ms.items() if name != probes.LOAD_GENERATOR)

    @property
    def app_ms(self) -> float:
        return self.cpu_ms["app replicas"]

    def predicted_rps(self, cores: int, with_load_generator: bool = False) -> float:
        """Bounded by the cores, and by each single-threaded service (one Redis: one core)."""
        total = self.server_ms + (self.cpu_ms[probes.LOAD_GENERATOR] if with_load_generator else 0.0)
        single_core = max((self.cpu_ms.get(name, 0.0) for name in SINGLE_CORE), default=0.0)
        return min(1000 * cores / total, 1000 / single_core if single_core > 0 else float("inf"))

    def replicas_for(self, cores: int) -> int:
        return max(1, math.ceil(cores * self.app_ms / self.server_ms))


@dataclass
class ReplicaFigures:
    cores: int
    points: list[CurvePoint]
    models: dict[str, CostModel]


def _measured(herd: Herd, run: Callable[[], Run]) -> tuple[Run, dict[str, float]]:
    before = probes.cpu_seconds(herd)
    result = run()
    after = probes.cpu_seconds(herd)
    return result, probes.cpu_ms_per_request(before, after, result.requests)


def measure(
    herd: Herd | None = None,
    sessions: list[tuple[str, str]] | None = None,
    counts: list[int] = COUNTS,
    rounds: int = catalog.ROUNDS,
) -> ReplicaFigures:
    herd = herd or catalog.prepare()
    slugs = catalog.sample_slugs()
    categories = [row[0] for row in catalog.sql("SELECT slug FROM catalog_category")]
    paths = catalog.mix_paths(slugs, categories)
    hot = f"{catalog.URL}/p/{slugs[0]}/"
    warm_page = partial(wrk, hot, catalog.DURATION, catalog.CONNECTIONS, headers=NO_EDGE_CACHE)
    runs: dict[int, dict[str, list[Run]]] = {n: {case: [] for case in CASES} for n in counts}
    costs: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    for _ in range(rounds):
        for count in counts:
            catalog.configure(herd, catalog.HERD, replicas=count)
            if sessions is None:
                sessions = catalog.log_in_users(catalog.USERS)
            httpx.get(hot)
            warm, cost = _measured(herd, warm_page)
            runs[count][CASES[0]].append(warm)
            costs[CASES[0]].append(cost)
            mix, cost = _measured(herd, partial(catalog.run_paths, paths, sessions))
            runs[count][CASES[1]].append(mix)
            costs[CASES[1]].append(cost)
    catalog.configure(herd, catalog.HERD, replicas=catalog.REPLICAS)
    models = {
        case: CostModel(case, {name: statistics.median(c[name] for c in samples) for name in samples[0]})
        for case, samples in costs.items()
    }
    points = [CurvePoint(n, {case: median_run(r) for case, r in runs[n].items()}) for n in counts]
    return ReplicaFigures(os.cpu_count() or 1, points, models)


def render(part: Part) -> list[str]:
    """This part's section of the report (bench/report.py): its tables and charts, or why it failed."""
    cores = os.cpu_count() or 1
    lines = [f"### Throughput by app replicas ({cores} cores, os.cpu_count()) (bench/replicas.py)", ""]
    if not part.ok:
        return lines + failed(part)
    figures: ReplicaFigures = part.value
    cases = CASES
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

    lines += [chart("replicas.png", draw), ""]
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
        + " | ".join(f"{n} cores: req/s (replicas)" for n in PREDICT_CORES)
        + " |",
        "|---|---:|---:|" + "---:|" * len(PREDICT_CORES),
    ]
    for case in cases:
        model = figures.models[case]
        predictions = " | ".join(f"{model.predicted_rps(n):.0f} ({model.replicas_for(n)})" for n in PREDICT_CORES)
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

    lines += [chart("cost-model.png", draw_costs), ""]
    return lines


def history(figures: ReplicaFigures) -> Figures:
    """This part's figures for the history (bench/rendering.py): each case's req/s by replica
    count, and its peak against one replica."""
    rates = {f"{case}, {point.replicas} replicas": point.runs[case].rps for point in figures.points for case in CASES}
    one = next((point for point in figures.points if point.replicas == 1), None)
    ratios = {}
    if one is not None:
        for case in CASES:
            ratios[f"{case}: best replica count / 1 replica"] = max(p.runs[case].rps for p in figures.points) / (
                one.runs[case].rps
            )
    return {"ratios": ratios, "requests/s": rates}


def main() -> None:
    figures = measure()
    print(f"## Replicas ({figures.cores} cores)\n")
    print("| app replicas | " + " | ".join(f"{case} req/s" for case in CASES) + " |")
    print("|---:|" + "---:|" * len(CASES))
    for point in figures.points:
        print(f"| {point.replicas} | " + " | ".join(f"{point.runs[c].rps:.0f}" for c in CASES) + " |")
    for model in figures.models.values():
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in model.cpu_ms.items())
        print(f"\n- {model.case}: CPU-ms per request: {parts}")
        for cores in PREDICT_CORES:
            print(
                f"  - {cores} cores: about {model.predicted_rps(cores):.0f} req/s"
                f" with {model.replicas_for(cores)} replicas"
            )


if __name__ == "__main__":
    main()
