"""What the benchmarks' renderings share: where the report goes, ``Part`` (one part's figures,
or why it failed), the table of wrk runs, charts drawn into the report's ``perf`` folder and
their colours, and the history of runs. Each benchmark module renders its own part
(``render(part)``, beside its measurement) and names the figures it adds to the history
(``history(figures)``); bench/report.py runs them all and writes the report.

The history (``bench/history.jsonl``, ``BENCH_HISTORY`` elsewhere) gains one JSON object
per run, never rewritten: its date, commit, machine, settings, and its figures by group
(``GROUPS``: name -> value). ``history_section`` shows, for every figure, the median and
the spread (min-max) over the last ``BENCH_HISTORY_RUNS`` full runs (short runs are kept
but not counted), the performance issue's targets in each of the newest of them
(bench/targets.py), and a hand-written SVG chart of each ratio over those runs.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.targets import targets_table
from bench.wrk import Run

ROOT = Path(__file__).resolve().parent.parent
REPORT = Path(os.environ.get("BENCH_REPORT", ROOT / "docs" / "PERFORMANCE.md"))
CHARTS = REPORT.parent / "perf"
HERD_COLOR, CONVENTIONAL_COLOR = "#2b6cb0", "#a0aec0"
HISTORY = Path(os.environ.get("BENCH_HISTORY", ROOT / "bench" / "history.jsonl"))
HISTORY_RUNS = int(os.environ.get("BENCH_HISTORY_RUNS", "10"))
# The targets table has a column per run: the newest few.
TARGET_RUNS = 5
# A run's figures, by group: what each is, as the tables head it.
GROUPS = {"ratios": "ratio", "requests/s": "requests/s", "measures": "measure"}
Figures = dict[str, dict[str, float]]


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


def runs_table(rows: list[tuple[str, Run]]) -> list[str]:
    lines = ["| case | req/s | p50 ms | p99 ms | failed |", "|---|---:|---:|---:|---:|"]
    for name, run in rows:
        lines.append(f"| {name} | {run.rps:.0f} | {run.p50_ms:.2f} | {run.p99_ms:.2f} | {run.errors} |")
    return lines


def chart(name: str, draw: Callable[[], None]) -> str:
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


def failed(part: Part) -> list[str]:
    return [f"**Failed**: {part.error} (traceback in `.herd/bench/logs/report.log`).", ""]


# --------------------------------------------------------------------------- the history


def append_history(entry: dict[str, Any], path: Path = HISTORY) -> None:
    """Add one run to the history file (one JSON object per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as history:
        history.write(json.dumps(entry, sort_keys=True) + "\n")


def read_history(path: Path = HISTORY) -> list[dict[str, Any]]:
    """Every run in the history file, oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def counted(runs: list[dict[str, Any]], last: int = HISTORY_RUNS) -> list[dict[str, Any]]:
    """The last ``last`` full runs (a short run checks the suite; its figures do not count)."""
    return [run for run in runs if not run.get("short")][-last:]


@dataclass(frozen=True)
class Spread:
    """One figure over the counted runs: the newest value, the median, the range, how many runs had it."""

    last: float
    median: float
    low: float
    high: float
    runs: int


def spreads(runs: list[dict[str, Any]], group: str) -> dict[str, Spread]:
    """Every figure of ``group`` in ``runs`` (oldest first), in the order they first appear."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for name, value in run.get("figures", {}).get(group, {}).items():
            if value is not None:
                values.setdefault(name, []).append(value)
    return {
        name: Spread(found[-1], statistics.median(found), min(found), max(found), len(found))
        for name, found in values.items()
    }


def shown(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def history_table(runs: list[dict[str, Any]], group: str) -> list[str]:
    found = spreads(runs, group)
    if not found:
        return []
    # Counts (requests aside, the measures are counts or milliseconds) read best whole.
    show = shown if group == "ratios" else lambda v: f"{v:,.0f}" if float(v).is_integer() else shown(v)
    lines = [f"| {GROUPS[group]} | median | min-max | last run | runs |", "|---|---:|---:|---:|---:|"]
    for name, s in found.items():
        lines.append(f"| {name} | **{show(s.median)}** | {show(s.low)}-{show(s.high)} | {show(s.last)} | {s.runs} |")
    return [*lines, ""]


def history_svg(runs: list[dict[str, Any]], group: str = "ratios", columns: int = 3) -> str:
    """Small multiples: one panel per figure of ``group``, its value in each run (oldest left),
    its own scale (min and max written at the side), the median dashed."""
    names = list(spreads(runs, group))
    width, height, pad = 300, 130, 36
    rows = max(1, -(-len(names) // columns))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{columns * width}" height="{rows * height}" '
        f'viewBox="0 0 {columns * width} {rows * height}" font-family="sans-serif" font-size="10">',
        f'<rect width="{columns * width}" height="{rows * height}" fill="white"/>',
    ]
    for index, name in enumerate(names):
        left, top = (index % columns) * width, (index // columns) * height
        points = [(i, run["figures"][group][name]) for i, run in enumerate(runs) if _has(run, group, name)]
        values = [v for _, v in points]
        low, high = min(values), max(values)
        x0, x1, y0, y1 = left + pad + 8, left + width - 10, top + 24, top + height - 26

        def x(i: int, x0: float = x0, x1: float = x1) -> float:
            return x0 + (x1 - x0) * (i / max(len(runs) - 1, 1))

        def y(v: float, y0: float = y0, y1: float = y1, low: float = low, high: float = high) -> float:
            if high == low:  # one value: a level line in the middle
                return (y0 + y1) / 2
            return y1 - 4 - (y1 - y0 - 8) * ((v - low) / (high - low))

        median = statistics.median(values)
        parts += [
            f'<text x="{left + 6}" y="{top + 14}" font-weight="bold">{escape(name)}</text>',
            f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" stroke="#e2e8f0"/>',
            f'<text x="{x0 - 4}" y="{y(high) + 3:.1f}" text-anchor="end">{shown(high)}</text>',
            f'<text x="{x0 - 4}" y="{y(low) + 3:.1f}" text-anchor="end">{shown(low)}</text>',
            f'<text x="{x0}" y="{y1 + 12}" fill="#718096">{escape(runs[0]["commit"])}</text>',
            f'<text x="{x1}" y="{y1 + 12}" fill="#718096" text-anchor="end">{escape(runs[-1]["commit"])}</text>',
            f'<line class="median" x1="{x0}" x2="{x1}" y1="{y(median):.1f}" y2="{y(median):.1f}" '
            f'stroke="{CONVENTIONAL_COLOR}" stroke-dasharray="4 3"/>',
            f'<polyline class="figure" fill="none" stroke="{HERD_COLOR}" stroke-width="1.5" points="'
            + " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in points)
            + '"/>',
            *(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{HERD_COLOR}"/>' for i, v in points),
        ]
    return "\n".join([*parts, "</svg>", ""])


def _has(run: dict[str, Any], group: str, name: str) -> bool:
    return run.get("figures", {}).get(group, {}).get(name) is not None


def history_section(runs: list[dict[str, Any]], last: int = HISTORY_RUNS) -> list[str]:
    """The report's summary of the history: medians and spreads of the last full runs, and the chart."""
    recent = counted(runs, last)
    lines = ["### Every run counts: the last runs (bench/history.jsonl)", ""]
    if not recent:
        return [*lines, "No full run in the history yet.", ""]
    first, newest = recent[0], recent[-1]
    lines += [
        f"Median and spread (min-max) over the last {len(recent)} full runs of `make bench` "
        f"({first['date']}, {first['commit']} to {newest['date']}, {newest['commit']}; "
        f"short runs left out: {sum(1 for run in runs if run.get('short'))} in the history), "
        "each run's figures being medians of its own rounds. The sections below are the newest run's.",
        "",
    ]
    machines = sorted({_machine(run) for run in recent})
    lines += [f"Machines: {'; '.join(machines)}.", ""]
    for group in GROUPS:
        lines += history_table(recent, group)
    lines += targets_table(recent[-TARGET_RUNS:])
    if spreads(recent, "ratios"):
        CHARTS.mkdir(parents=True, exist_ok=True)
        (CHARTS / "history.svg").write_text(history_svg(recent))
        lines += [f"![history of the ratios, oldest run left]({CHARTS.name}/history.svg)", ""]
    return lines


def _machine(run: dict[str, Any]) -> str:
    machine = run.get("machine", {})
    cores, memory, kernel = (machine.get(key, "?") for key in ("cores", "memory_gib", "kernel"))
    return f"{cores} cores, {memory} GiB, Linux {kernel}"
