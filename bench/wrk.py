"""Running wrk (a load generator in its own process) and reading its percentiles."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # Responses wrk counted (the denominator of a per-request cost).
    requests: int = 0


# A request header that sends wrk past HAProxy's edge cache, to the app replicas.
NO_EDGE_CACHE = ("Cache-Control: no-cache",)


def wrk(
    url: str,
    duration: str,
    connections: int,
    script: Path | None = None,
    args: tuple[str, ...] = (),
    headers: tuple[str, ...] = (),
) -> Run:
    ensure_wrk()
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "--latency"]
    for header in headers:
        command += ["-H", header]
    if script:
        command += ["-s", str(script)]
    command.append(url)
    if args:
        command += ["--", *args]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def percentile(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = int(errors.group(1)) if errors else 0
    if socket_errors:
        failed += sum(int(n) for n in socket_errors.groups())
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return Run(rps, percentile("50"), percentile("99"), failed, requests)


def ensure_wrk() -> None:
    if shutil.which("wrk") is None:
        from deploy.herd.debian import ensure_packages  # installs Debian's wrk when root

        ensure_packages(extra={"/usr/bin/wrk": "wrk"})


def wrk_version() -> str:
    ensure_wrk()
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return out.split("[")[0].strip() or "wrk (version unknown)"


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.errors for r in runs),
        round(statistics.median(r.requests for r in runs)),
    )
