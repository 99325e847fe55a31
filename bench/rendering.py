"""What the benchmarks' renderings share: where the report goes, ``Part`` (one part's figures,
or why it failed), the table of wrk runs, charts drawn into the report's ``perf`` folder and
their colours. Each benchmark module renders its own part (``render(part)``, beside its
measurement); bench/report.py runs them all and writes the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.wrk import Run

ROOT = Path(__file__).resolve().parent.parent
REPORT = Path(os.environ.get("BENCH_REPORT", ROOT / "docs" / "PERFORMANCE.md"))
CHARTS = REPORT.parent / "perf"
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
