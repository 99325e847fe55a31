"""A prepared product picture through HAProxy's media cache, beside the minimal view.

``measure(herd)`` takes one prepared size of a seeded picture (the 640-pixel WebP, the
size a phone's list asks for) and, in each round, runs wrk on ``/robots.txt`` past the
edge cache (the app's ceiling, bench/catalog.py) and then on the picture as a browser
asks for it, counting around each run what the app replicas did: the requests their own
counters saw (``herd_http_requests_total`` on each replica's ``/metrics``) and their CPU
time (``/proc/<pid>/stat``, ``bench.probes``). Once the picture is in HAProxy's cache no
replica handles it: zero app requests. ``first_requests`` shows who answers the first
request of a size HAProxy has not stored (a fresh query string on the same name, which the
app ignores) and the one after it. ``render(part)`` writes its section of the report,
``history(figures)`` names its figures.
"""

from __future__ import annotations

import re
import statistics
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bench import catalog, probes
from bench.rendering import Figures, Part, failed, runs_table
from bench.wrk import NO_EDGE_CACHE, Run, median_run, wrk
from deploy.herd.control import Herd
from deploy.herd.processes import HerdError

MINIMAL_VIEW = "minimal view (app)"
PICTURE = "prepared picture, media cache"
REQUESTS_METRIC = "herd_http_requests_total"


def app_requests(herd: Herd) -> int:
    """Requests every app replica counted so far (``herd_http_requests_total``), its own
    ``/metrics`` scrapes left out."""
    total = 0
    for web in herd.webs():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web.port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError) as error:
            raise HerdError(f"{web.name} did not answer /metrics: {error}") from error
        for match in re.finditer(rf"^{REQUESTS_METRIC}\{{([^}}]*)\}}\s+(\S+)$", text, re.MULTILINE):
            if 'view="metrics"' not in match.group(1):
                total += round(float(match.group(2)))
    return total


def prepared_picture() -> str:
    """The path of one prepared size of a seeded picture: the 640-pixel WebP (or the widest below)."""
    rows = catalog.sql(
        "SELECT renditions->'webp' FROM catalog_imagefile WHERE prepared_at IS NOT NULL ORDER BY id LIMIT 1"
    )
    if not rows or not rows[0][0]:
        raise HerdError("no prepared picture in the bench database (seed_catalog prepares its drawings)")
    sizes = [size for size in rows[0][0] if size[0] <= 640] or rows[0][0][:1]
    return f"/media/{sizes[-1][2]}"


@dataclass(frozen=True)
class Served:
    """One measured run: wrk's figures, and what the app replicas did meanwhile."""

    run: Run
    app_requests: int  # counted by the replicas during the run
    app_cpu_ms: float  # app replicas' CPU-ms per request
    haproxy_cpu_ms: float  # HAProxy's CPU-ms per request


@dataclass(frozen=True)
class FirstRequest:
    """One single request: who answered, how fast, and the app requests it caused."""

    label: str
    status: int
    cache: str  # HAProxy's X-Cache ("hit") or ""
    served_by: str  # X-Served-By: the replica that made the answer (kept in a stored copy)
    ms: float
    app_requests: int


@dataclass
class ImageFigures:
    path: str
    bytes: int
    runs: dict[str, Served]  # MINIMAL_VIEW, PICTURE: medians over the rounds
    app_requests: int  # during every picture run of every round, together
    first: list[FirstRequest]


def served(herd: Herd, measure: Callable[[], Run]) -> Served:
    requests_before, cpu_before = app_requests(herd), probes.cpu_seconds(herd)
    result = measure()
    cpu_after, requests_after = probes.cpu_seconds(herd), app_requests(herd)
    cost = probes.cpu_ms_per_request(cpu_before, cpu_after, result.requests)
    return Served(result, requests_after - requests_before, cost["app replicas"], cost["HAProxy"])


def first_requests(herd: Herd, path: str) -> list[FirstRequest]:
    """The first request of a name HAProxy has not stored, then the same again."""
    fresh = f"{path}?first={uuid.uuid4().hex}"
    found = []
    with httpx.Client(base_url=catalog.URL, timeout=30) as client:
        for label in ("first request", "second request"):
            before = app_requests(herd)
            started = time.perf_counter()
            response = client.get(fresh)
            ms = (time.perf_counter() - started) * 1000
            found.append(
                FirstRequest(
                    label,
                    response.status_code,
                    response.headers.get("x-cache", ""),
                    response.headers.get("x-served-by", ""),
                    ms,
                    app_requests(herd) - before,
                )
            )
    return found


def measure(herd: Herd, rounds: int = catalog.ROUNDS) -> ImageFigures:
    """Medians over ``rounds`` of the minimal view and the prepared picture, in the same run."""
    catalog.configure(herd, catalog.HERD, replicas=catalog.REPLICAS)
    path = prepared_picture()
    url = f"{catalog.URL}{path}"
    body = httpx.get(url, timeout=30)  # stored by HAProxy from here on
    body.raise_for_status()
    first = first_requests(herd, path)
    runs: dict[str, list[Served]] = {MINIMAL_VIEW: [], PICTURE: []}
    for _ in range(rounds):
        runs[MINIMAL_VIEW].append(
            served(
                herd,
                lambda: wrk(f"{catalog.URL}/robots.txt", catalog.DURATION, catalog.CONNECTIONS, headers=NO_EDGE_CACHE),
            )
        )
        runs[PICTURE].append(
            served(herd, lambda: wrk(url, catalog.DURATION, catalog.CONNECTIONS, headers=("Accept: image/webp",)))
        )
    return ImageFigures(
        path=path,
        bytes=len(body.content),
        runs={
            name: Served(
                median_run([s.run for s in found]),
                round(statistics.median(s.app_requests for s in found)),
                statistics.median(s.app_cpu_ms for s in found),
                statistics.median(s.haproxy_cpu_ms for s in found),
            )
            for name, found in runs.items()
        },
        app_requests=sum(s.app_requests for s in runs[PICTURE]),
        first=first,
    )


def render(part: Part) -> list[str]:
    """This part's section of the report (bench/report.py)."""
    lines = ["### A prepared picture from HAProxy's media cache (bench/images.py)", ""]
    if not part.ok:
        return lines + failed(part)
    figures: ImageFigures = part.value
    ceiling, picture = figures.runs[MINIMAL_VIEW], figures.runs[PICTURE]
    lines += [
        f"One prepared size of a seeded picture (`{figures.path}`, {figures.bytes:,} bytes), asked for as "
        "a browser does, beside `/robots.txt` past the edge cache (the app's ceiling), in the same rounds. "
        "App requests are what the replicas' own counters (`herd_http_requests_total`) saw during the "
        "run; CPU-ms per request from `/proc/<pid>/stat`.",
        "",
        *runs_table([(MINIMAL_VIEW, ceiling.run), (PICTURE, picture.run)]),
        "",
        "| case | app requests during the run | app CPU-ms / request | HAProxy CPU-ms / request |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {s.app_requests:,} | {s.app_cpu_ms:.3f} | {s.haproxy_cpu_ms:.3f} |"
            for name, s in figures.runs.items()
        ),
        "",
        f"- prepared picture / minimal view: **{picture.run.rps / ceiling.run.rps:.2f}x** the requests/s; "
        f"app requests during every picture run together: **{figures.app_requests}**",
        "",
        "The first request of a size HAProxy has not stored, and the one after it:",
        "",
        "| request | status | X-Cache | X-Served-By | ms | app requests |",
        "|---|---:|---|---|---:|---:|",
        *(
            f"| {f.label} | {f.status} | {f.cache or '(miss)'} | {f.served_by or '-'} | {f.ms:.1f} | {f.app_requests} |"
            for f in figures.first
        ),
        "",
    ]
    return lines


def history(figures: ImageFigures) -> Figures:
    """This part's figures for the history (bench/rendering.py)."""
    ceiling, picture = figures.runs[MINIMAL_VIEW], figures.runs[PICTURE]
    return {
        "ratios": {"prepared picture (media cache) / minimal view": picture.run.rps / ceiling.run.rps},
        "requests/s": {PICTURE: picture.run.rps},
        "measures": {
            "app requests during the picture runs": figures.app_requests,
            "app CPU-ms per picture request": round(picture.app_cpu_ms, 4),
        },
    }


def main() -> None:
    herd = catalog.prepare()
    for line in render(Part("images", measure(herd))):
        print(line)


if __name__ == "__main__":
    main()
