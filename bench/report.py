"""``make bench``: every benchmark on one bench herd, written into docs/PERFORMANCE.md.

A part that fails is reported as failed (its traceback in ``.herd/bench/logs/report.log``)
and the others still run. Every run is appended to the history (bench/history.jsonl: date,
commit, machine, settings and each part's ``history(figures)``), and the report opens with
the medians and spreads of the last runs (bench/rendering.py), not this run's alone. Each
part's section comes from its own module's ``render(part)``; the block between
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` is replaced, the prose around it kept.
``BENCH_REPORT`` writes the report elsewhere, ``BENCH_HISTORY`` the history.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import baseline, catalog, growth, images, replicas
from bench.rendering import CHARTS, GROUPS, HISTORY, REPORT, Part, append_history, history_section, read_history
from bench.wrk import wrk_version
from deploy.doc_blocks import provenance, replace_block
from deploy.herd.control import Herd
from deploy.herd.debian import postgres_bindir

try:
    from bench import shards
except ImportError:
    shards = None

LOG = catalog.PROFILE.logs / "report.log"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
DEFAULTS = {"BENCH_ROUNDS": "3", "BENCH_DURATION": "8s", "BENCH_PRODUCTS": "1000000"}


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


def machine_record() -> dict[str, Any]:
    """The machine as the history keeps it: what its figures depend on."""
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal")), 0)
    return {
        "host": platform.node(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "arch": platform.machine(),
    }


def short_settings() -> dict[str, str]:
    """The knobs this run changed from a full run's (a short run checks the suite)."""
    return {k: os.environ[k] for k, v in DEFAULTS.items() if os.environ.get(k, v) != v}


def history_entry(parts: dict[str, Part], wall_seconds: float, commit: str | None = None) -> dict[str, Any]:
    """This run as one line of the history: every part's figures (``history(figures)``);
    ``commit`` is the code measured, taken before the run writes its figures into the tree."""
    figures: dict[str, dict[str, float]] = {group: {} for group in GROUPS}
    recorded = {name: "ok" if part.ok else "failed" for name, part in parts.items()}
    for name, part in parts.items():
        if not part.ok:
            continue
        try:
            for group, values in _module(name).history(part.value).items():
                figures[group].update(values)
        except Exception as error:  # the other parts' figures still count
            recorded[name] = f"figures not recorded: {type(error).__name__}: {error}"[:300]
    return {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
        "commit": commit or provenance(),
        "machine": machine_record(),
        "short": bool(short_settings()),
        "settings": {k: os.environ.get(k, v) for k, v in DEFAULTS.items()},
        "wall_minutes": round(wall_seconds / 60, 1),
        "parts": recorded,
        "figures": figures,
    }


def _module(name: str) -> Any:
    if name == "jobs":
        from bench import jobs  # sets Django up in this process for the bench herd

        return jobs
    modules = {"catalog": catalog, "images": images, "baseline": baseline, "replicas": replicas, "growth": growth}
    return {**modules, "shards": shards}[name]


def render(parts: dict[str, Part], about: list[tuple[str, str]], wall_seconds: float, commit: str) -> str:
    short = short_settings()
    lines = [
        BEGIN,
        "<!-- Written by bench/report.py (make bench): edit the prose outside these markers. -->",
        "",
        f"## Figures from `make bench`, {datetime.now(UTC):%Y-%m-%d}, commit {commit}",
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
        *history_section(read_history()),
    ]
    # Imported here: bench.jobs sets Django up in this process for the bench herd.
    from bench import jobs

    lines += catalog.render(parts["catalog"])
    lines += images.render(parts["images"])
    lines += baseline.render(parts["baseline"])
    lines += replicas.render(parts["replicas"])
    lines += growth.render(parts["growth"])
    lines += jobs.render(parts["jobs"])
    if "shards" in parts:
        lines += shards.render(parts["shards"])
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
    commit = provenance()  # before the history and the charts change the tree
    parts: dict[str, Part] = {}
    prepared = attempt("bench herd and catalog data", catalog.prepare)
    herd: Herd | None = prepared.value
    about = machine()
    if herd is None:
        for name in ("catalog", "images", "baseline", "replicas", "growth", "jobs"):
            parts[name] = Part(name, error=f"the bench herd did not come up: {prepared.error}")
    else:
        parts["catalog"] = attempt("catalog", lambda: catalog.measure(herd))
        sessions = parts["catalog"].value.sessions if parts["catalog"].ok else None
        parts["images"] = attempt("images", lambda: images.measure(herd))
        parts["baseline"] = attempt("baseline", lambda: baseline.measure(herd))
        parts["replicas"] = attempt("replicas", lambda: replicas.measure(herd, sessions))
        parts["growth"] = attempt("growth", lambda: growth.measure(herd))
        parts["jobs"] = attempt("jobs", lambda: measure_jobs(herd))
        if shards is not None:
            parts["shards"] = attempt("shards", lambda: shards.measure())
    wall_seconds = time.monotonic() - started
    append_history(history_entry(parts, wall_seconds, commit))
    block = render(parts, about, wall_seconds, commit)
    replace_block(REPORT, BEGIN, END, block)
    print(block)
    print(f"\nwritten: {REPORT} (charts in {CHARTS}); this run added to {HISTORY}")
    return 0 if all(part.ok for part in parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
