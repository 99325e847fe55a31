"""The performance issue's targets, judged on every run of the history (bench/history.jsonl).

Each ``Target`` reads one run's recorded figures (the names each part's ``history(figures)``
gives them) and says whether that run met it. ``targets_table`` shows every target in each
of the last full runs, so "in each of three consecutive runs" is read off, not asserted;
the parts' own sections judge only the newest run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RunFigures = dict[str, dict[str, float]]


def figure(group: str, name: str) -> Callable[[RunFigures], float | None]:
    return lambda figures: figures.get(group, {}).get(name)


def ratio(numerator: str, denominator: str, group: str = "requests/s") -> Callable[[RunFigures], float | None]:
    def value(figures: RunFigures) -> float | None:
        top, bottom = figures.get(group, {}).get(numerator), figures.get(group, {}).get(denominator)
        return None if top is None or not bottom else top / bottom

    return value


@dataclass(frozen=True)
class Target:
    name: str
    value: Callable[[RunFigures], float | None]
    met: Callable[[float], bool]
    shown: str = "{:.2f}x"


TARGETS = [
    Target(
        "mix: Herd ≥ 1.5x the competent baseline's req/s",
        figure("ratios", "mix: Herd / competent baseline, req/s"),
        lambda v: v >= 1.5,
    ),
    Target(
        "stale reads, Herd: 0",
        figure("measures", "stale reads, Herd (author + visitor)"),
        lambda v: v == 0,
        "{:.0f}",
    ),
    Target(
        "uniform mix: Herd not slower than the competent baseline",
        figure("ratios", "uniform mix: Herd / competent baseline, req/s"),
        lambda v: v >= 1.0,
    ),
    Target(
        "the whole mix ≥ 0.5x the minimal view's req/s",
        ratio("mix, Herd", "minimal view (app)"),
        lambda v: v >= 0.5,
    ),
    Target(
        "logged-in product page ≥ 0.5x the minimal view",
        figure("ratios", "product page, logged in (app) / minimal view"),
        lambda v: v >= 0.5,
    ),
    Target(
        "one replica: ≥ 5,000 sockets, one event to all within 1 s",
        figure("measures", "sockets one event reaches within 1 s (one replica)"),
        lambda v: v >= 5000,
        "{:,.0f}",
    ),
    Target(
        "job completion to the socket, p99 < 150 ms",
        figure("measures", "job completion to the socket, p99 ms"),
        lambda v: v < 150,
        "{:.0f} ms",
    ),
]


def targets_table(runs: list[dict[str, Any]], targets: list[Target] = TARGETS) -> list[str]:
    """Every target in each of ``runs`` (full runs, oldest first): the value, whether it was
    met, and whether every run that measured it met it."""
    if not runs:
        return []
    heads = [f"{run['date'][5:]} {run['commit']}" for run in runs]
    lines = [
        "The performance issue's targets in each of these runs (bench/targets.py):",
        "",
        f"| target | {' | '.join(heads)} | met in each |",
        f"|---|{'---:|' * len(runs)}---|",
    ]
    for target in targets:
        cells, verdicts = [], []
        for run in runs:
            value = target.value(run.get("figures", {}))
            if value is None:
                cells.append("n/a")
                continue
            verdicts.append(target.met(value))
            cells.append(f"{target.shown.format(value)} ({'yes' if verdicts[-1] else 'no'})")
        each = "n/a" if not verdicts else f"{'yes' if all(verdicts) else 'no'} ({sum(verdicts)} of {len(verdicts)})"
        lines.append(f"| {target.name} | {' | '.join(cells)} | {each} |")
    return [*lines, ""]
