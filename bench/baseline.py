"""Herd against what a competent team would deploy instead, on the same browse mix, with
stale reads counted. ``measure()`` returns the figures, ``render(part)`` writes its section
of docs/PERFORMANCE.md, ``history(figures)`` its figures for the history.

**The competent baseline**: gunicorn with (2 x cores) + 1 sync workers (its documentation's
formula) in web1's place behind the same HAProxy, bench/baseline_settings.py (one
PostgreSQL with persistent connections, Redis as Django's cache, ``cached_db`` sessions,
``cache_page`` on the anonymous catalog pages), every request past HAProxy's edge cache.
**Herd**: the bench herd as deployed (bench/catalog.py's ``HERD``), the edge cache in use.

**Stale reads**: while wrk runs the mix, a probe shopper of its own posts a review on one of
the most viewed products through the form, and once the post has returned reads the product
page as its author and as a visitor without cookies (through the edge cache where the mix's
anonymous requests go through it); a page without the review is a stale read.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass, field

import httpx

from bench import catalog
from bench.rendering import Figures, Part, failed, runs_table
from bench.wrk import NO_EDGE_CACHE, Run, median_run
from deploy.herd.app import Web
from deploy.herd.control import Herd
from deploy.herd.processes import spawn
from deploy.herd.profiles import VENV_PYTHON

WORKERS = 2 * (os.cpu_count() or 1) + 1
BASELINE = {
    "DJANGO_SETTINGS_MODULE": "bench.baseline_settings",
    "DATABASE_REPLICA_URLS": "",
    "SHARD_REPLICA_URLS": "",
    "DJANGO_LOG_LEVEL": "WARNING",
}
HERD, COMPETENT = "Herd", "competent baseline"
# A pause between the probe's writes: a shopper's pace, not a load of its own.
PROBE_PAUSE = 0.25
HOT_PRODUCTS = 10


class Gunicorn(Web):
    """The baseline's app server in web1's place: gunicorn, ``WORKERS`` sync workers."""

    def launch(self) -> None:
        command = [str(VENV_PYTHON.parent / "gunicorn"), "config.wsgi", "--bind", f"127.0.0.1:{self.port}"]
        spawn(self, [*command, "--workers", str(WORKERS), "--graceful-timeout", "5", "--no-control-socket"], self.env())


def start_baseline(herd: Herd) -> None:
    catalog.configure(herd, BASELINE, replicas=1, webs=[Gunicorn(herd.profile, 1, herd.database, BASELINE)])


@dataclass
class StaleReads:
    """Review posts the probe made and, after each had returned, the pages without it."""

    posts: int = 0
    author: int = 0
    visitor: int = 0
    failed_posts: int = 0

    def add(self, other: StaleReads) -> None:
        for name in ("posts", "author", "visitor", "failed_posts"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def probe(stop: threading.Event, slugs: list[str], session: tuple[str, str], visitor: tuple[str, ...]) -> StaleReads:
    """Post reviews and read them back until ``stop``: see the module's docstring."""
    reads = StaleReads()
    cookie, token = session
    author_headers = {"Cookie": f"sessionid={cookie}; csrftoken={token}"}
    anonymous = dict(header.split(": ", 1) for header in visitor)
    with httpx.Client(base_url=catalog.URL, timeout=30, follow_redirects=False) as client:
        number = 0
        while not stop.is_set():
            slug = slugs[number % len(slugs)]
            number += 1
            text = f"probe {uuid.uuid4().hex[:12]}"
            data = {"csrfmiddlewaretoken": token, "rating": str(1 + number % 5), "text": text}
            posted = client.post(f"/p/{slug}/review/", data=data, headers=author_headers)
            if posted.status_code != 302:
                reads.failed_posts += 1
            else:
                reads.posts += 1
                reads.author += text not in client.get(f"/p/{slug}/", headers=author_headers).text
                # A new client: a visitor without cookies.
                reads.visitor += text not in httpx.get(f"{catalog.URL}/p/{slug}/", headers=anonymous, timeout=30).text
            stop.wait(PROBE_PAUSE)
    return reads


def mix_with_probe(
    paths: list[str], sessions: list[tuple[str, str]], headers: tuple[str, ...], prober: tuple[str, str], hot: list[str]
) -> tuple[Run, StaleReads]:
    stop = threading.Event()
    found: list[StaleReads] = []
    thread = threading.Thread(target=lambda: found.append(probe(stop, hot, prober, headers)), daemon=True)
    thread.start()
    try:
        run = catalog.run_paths(paths, sessions, headers)
    finally:
        stop.set()
        thread.join(60)
    if not found:
        raise RuntimeError("the stale-read probe failed (see the traceback above)")
    return run, found[0]


@dataclass
class BaselineFigures:
    mixes: dict[str, Run]
    stale: dict[str, StaleReads]
    workers: int
    cache_seconds: int
    settings: dict[str, str] = field(default_factory=dict)


def measure(herd: Herd | None = None, rounds: int = catalog.ROUNDS, users: int = catalog.USERS) -> BaselineFigures:
    """The mix under Herd and under the competent baseline, rounds alternating; medians, stale reads summed."""
    herd = herd or catalog.prepare()
    slugs = catalog.sample_slugs()
    categories = [row[0] for row in catalog.sql("SELECT slug FROM catalog_category")]
    paths = catalog.mix_paths(slugs, categories)
    hot = slugs[:HOT_PRODUCTS]  # Zipf's most viewed: cached wherever anything is
    starts = {
        HERD: lambda: catalog.configure(herd, catalog.HERD, replicas=catalog.REPLICAS),
        COMPETENT: lambda: start_baseline(herd),
    }
    headers = {HERD: (), COMPETENT: NO_EDGE_CACHE}
    runs: dict[str, list[Run]] = {name: [] for name in starts}
    stale = {name: StaleReads() for name in starts}
    sessions: dict[str, tuple[list[tuple[str, str]], tuple[str, str]]] = {}
    for _ in range(rounds):
        for name, start in starts.items():
            start()
            if name not in sessions:  # each configuration keeps sessions in its own store
                sessions[name] = (catalog.log_in_users(users), catalog.log_in_users(1, prefix="benchprobe")[0])
            shoppers, prober = sessions[name]
            run, reads = mix_with_probe(paths, shoppers, headers[name], prober, hot)
            runs[name].append(run)
            stale[name].add(reads)
    catalog.configure(herd, catalog.HERD, replicas=catalog.REPLICAS)
    return BaselineFigures(
        mixes={name: median_run(found) for name, found in runs.items()},
        stale=stale,
        workers=WORKERS,
        cache_seconds=int(os.environ.get("BENCH_BASELINE_CACHE_SECONDS", "60")),
        settings={"rounds": str(rounds), "duration": catalog.DURATION, "users": str(users)},
    )


def render(part: Part) -> list[str]:
    """This part's section of the report (bench/report.py): its tables, or why it failed."""
    lines = ["### Herd against a competent baseline (bench/baseline.py)", ""]
    if not part.ok:
        return lines + failed(part)
    figures: BaselineFigures = part.value
    herd, competent = figures.mixes[HERD], figures.mixes[COMPETENT]
    lines += [
        f"The setup a team would deploy instead: gunicorn with {figures.workers} sync workers "
        "((2 x cores) + 1) behind the same HAProxy, one PostgreSQL with persistent connections, "
        "Redis as Django's cache, `cached_db` sessions, `cache_page` on the anonymous catalog "
        f"pages for {figures.cache_seconds} s, no read replica, none of Herd's caches, past the edge "
        "cache. Herd as deployed, edge cache included. The same browse mix, rounds alternating; "
        "the conventional row of the catalog section is the ablation (Herd's processes with every "
        "mechanism off).",
        "",
        *runs_table([(f"mix, {HERD}", herd), (f"mix, {COMPETENT}", competent)]),
        "",
        f"- Herd / competent baseline: **{herd.rps / competent.rps:.2f}x** the requests/s; "
        f"p50 **{herd.p50_ms / competent.p50_ms:.2f}x**, p99 **{herd.p99_ms / competent.p99_ms:.2f}x**",
        "",
        "Stale reads: a probe shopper posts a review on one of the 10 most viewed products during "
        "each run, then reads the page as its author and as a visitor without cookies; a page "
        "without the review it just posted is stale (summed over the rounds).",
        "",
        "| configuration | review posts | stale, author | stale, visitor | posts failed |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, reads in figures.stale.items():
        lines.append(f"| {name} | {reads.posts} | {reads.author} | {reads.visitor} | {reads.failed_posts} |")
    ratio, herd_stale = herd.rps / competent.rps, figures.stale[HERD].author + figures.stale[HERD].visitor
    met = "yes" if ratio >= 1.5 and herd_stale == 0 else "no"
    lines += [
        "",
        "| target | measured | met |",
        "|---|---:|---|",
        f"| Herd ≥ 1.5x the competent baseline's req/s on the mix, 0 stale reads "
        f"| {ratio:.2f}x, {herd_stale} stale | {met} |",
        "",
    ]
    return lines


def history(figures: BaselineFigures) -> Figures:
    """This part's figures for the history (bench/rendering.py)."""
    herd, competent = figures.mixes[HERD], figures.mixes[COMPETENT]
    measures = {}
    for name, reads in figures.stale.items():
        measures[f"stale reads, {name} (author + visitor)"] = reads.author + reads.visitor
        measures[f"review posts probed, {name}"] = reads.posts
    return {
        "ratios": {"mix: Herd / competent baseline, req/s": herd.rps / competent.rps},
        "requests/s": {"mix, Herd (beside the baseline)": herd.rps, f"mix, {COMPETENT}": competent.rps},
        "measures": measures,
    }


def main() -> None:
    print("\n".join(render(Part("baseline", measure()))))


if __name__ == "__main__":
    main()
