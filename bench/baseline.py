"""Herd against what a competent team would deploy instead, on the same browse mix, with
stale reads counted. ``measure()`` returns the figures, ``render(part)`` writes its section
of docs/PERFORMANCE.md, ``history(figures)`` its figures for the history.

**The competent baseline**: gunicorn with (2 x cores) + 1 sync workers (its documentation's
formula) in web1's place behind the same HAProxy, bench/baseline_settings.py (one
PostgreSQL with persistent connections, Redis as Django's cache, ``cached_db`` sessions,
``cache_page`` on the anonymous catalog pages), every request past HAProxy's edge cache.
**Herd**: the bench herd as deployed (bench/catalog.py's ``HERD``), the edge cache in use.

**Stale reads**: while wrk runs the mix, a probe of its own (a staff member) writes to one
of the most viewed products, in turn a review through the product page's form and a new
price through the admin's change form, and once the write has returned reads the product
page as its author and as a visitor without cookies (through the edge cache where the mix's
anonymous requests go through it); a page without the review or the price is a stale read.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser

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
    # Past the edge cache: nothing there to purge.
    "HERD_EDGE_ADMIN": "",
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
    """The probe's writes and, after each had returned, the pages that did not show it."""

    reviews: int = 0
    product_changes: int = 0
    author: int = 0
    visitor: int = 0
    failed_writes: int = 0

    def add(self, other: StaleReads) -> None:
        for name in ("reviews", "product_changes", "author", "visitor", "failed_writes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def hot_products(slugs: list[str]) -> list[dict[str, str]]:
    """The id and slug of each product in ``slugs``."""
    listed = ", ".join(f"'{slug}'" for slug in slugs)  # slugs: [a-z0-9-], from the database
    rows = catalog.sql(f"SELECT id, slug FROM catalog_product WHERE slug IN ({listed})")
    return [{"id": str(row[0]), "slug": str(row[1])} for row in rows]


class _FormFields(HTMLParser):
    """The fields a browser would submit from the page's ``<form id="{form_id}">``."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.fields: list[tuple[str, str]] = []
        self.in_form = self.done = False
        self._select: str | None = None
        self._textarea: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {key: value or "" for key, value in attrs}
        if tag == "form" and found.get("id") == self.form_id and not self.done:
            self.in_form = True
        if not self.in_form or "disabled" in found:
            return
        name = found.get("name")
        if tag == "input" and name:
            kind = found.get("type", "text").lower()
            if kind in ("submit", "button", "image", "reset", "file"):
                return
            if kind in ("checkbox", "radio") and "checked" not in found:
                return
            self.fields.append((name, found.get("value", "on" if kind in ("checkbox", "radio") else "")))
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select is not None and "selected" in found:
            self.fields.append((self._select, found.get("value", "")))
        elif tag == "textarea" and name:
            self._textarea, self._text = name, []

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            # The HTML parser drops the one newline that follows <textarea>, as browsers do.
            self.fields.append((self._textarea, "".join(self._text).removeprefix("\n")))
            self._textarea = None
        elif tag == "form" and self.in_form:
            self.in_form, self.done = False, True


def form_fields(html: str, form_id: str, **changes: str) -> dict[str, list[str]]:
    """What a browser posts from the page's form ``form_id`` (every field it holds, inline
    formsets' management forms included), with ``changes`` in place of their fields."""
    parser = _FormFields(form_id)
    parser.feed(html)
    fields: dict[str, list[str]] = {}
    for name, value in parser.fields:
        fields.setdefault(name, []).append(value)
    return fields | {name: [value] for name, value in changes.items()}


def make_staff(username: str) -> None:
    catalog.manage(
        "shell",
        "-c",
        f"from accounts.models import User; User.objects.filter(username={username!r})"
        ".update(is_staff=True, is_superuser=True)",
    )


def probe(
    stop: threading.Event, products: list[dict[str, str]], session: tuple[str, str], visitor: tuple[str, ...]
) -> StaleReads:
    """Write and read back until ``stop``: see the module's docstring."""
    reads = StaleReads()
    cookie, token = session
    author_headers = {"Cookie": f"sessionid={cookie}; csrftoken={token}"}
    anonymous = dict(header.split(": ", 1) for header in visitor)
    with httpx.Client(base_url=catalog.URL, timeout=30, follow_redirects=False) as client:
        number = 0
        while not stop.is_set():
            product = products[number % len(products)]
            number += 1
            if number % 2:
                shown = f"probe {uuid.uuid4().hex[:12]}"
                data = {"csrfmiddlewaretoken": token, "rating": str(1 + number % 5), "text": shown}
                posted = client.post(f"/p/{product['slug']}/review/", data=data, headers=author_headers)
                reads.reviews += posted.status_code == 302
            else:
                shown = f"{1000 + uuid.uuid4().int % 9_000_000 / 100:.2f}"  # a price no earlier write set
                change = f"/admin/catalog/product/{product['id']}/change/"
                # As a browser does: the change form as it is now, every field of it posted back.
                page = client.get(change, headers=author_headers).text
                form = form_fields(page, "product_form", price=shown, _save="Save")
                posted = client.post(change, data=form, headers=author_headers)
                reads.product_changes += posted.status_code == 302
            if posted.status_code != 302:
                reads.failed_writes += 1
            else:
                path = f"/p/{product['slug']}/"
                reads.author += shown not in client.get(path, headers=author_headers).text
                # A new client: a visitor without cookies.
                reads.visitor += shown not in httpx.get(f"{catalog.URL}{path}", headers=anonymous, timeout=30).text
            stop.wait(PROBE_PAUSE)
    return reads


def mix_with_probe(
    paths: list[str],
    sessions: list[tuple[str, str]],
    headers: tuple[str, ...],
    prober: tuple[str, str],
    hot: list[dict[str, str]],
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
    mixes: dict[str, Run]  # configuration -> the mix's median run
    stale: dict[str, StaleReads]
    workers: int
    cache_seconds: int
    # The same mix with every product equally likely (no stale-read probe).
    uniform: dict[str, Run] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)


def measure(herd: Herd | None = None, rounds: int = catalog.ROUNDS, users: int = catalog.USERS) -> BaselineFigures:
    """The mix (Zipf, then uniform) under Herd and under the competent baseline, rounds
    alternating; medians, stale reads summed."""
    herd = herd or catalog.prepare()
    slugs = catalog.sample_slugs()
    categories = [row[0] for row in catalog.sql("SELECT slug FROM catalog_category")]
    paths = catalog.mix_paths(slugs, categories)
    uniform = catalog.mix_paths(slugs, categories, uniform=True)
    hot = hot_products(slugs[:HOT_PRODUCTS])  # Zipf's most viewed: cached wherever anything is
    starts = {
        HERD: lambda: catalog.configure(herd, catalog.HERD, replicas=catalog.REPLICAS),
        COMPETENT: lambda: start_baseline(herd),
    }
    headers = {HERD: (), COMPETENT: NO_EDGE_CACHE}
    runs: dict[str, list[Run]] = {name: [] for name in starts}
    uniform_runs: dict[str, list[Run]] = {name: [] for name in starts}
    stale = {name: StaleReads() for name in starts}
    sessions: dict[str, tuple[list[tuple[str, str]], tuple[str, str]]] = {}
    for _ in range(rounds):
        for name, start in starts.items():
            start()
            if name not in sessions:  # each configuration keeps sessions in its own store
                prober = catalog.log_in_users(1, prefix="benchprobe")[0]
                make_staff("benchprobe0")
                sessions[name] = (catalog.log_in_users(users), prober)
            shoppers, prober = sessions[name]
            run, reads = mix_with_probe(paths, shoppers, headers[name], prober, hot)
            runs[name].append(run)
            stale[name].add(reads)
            uniform_runs[name].append(catalog.run_paths(uniform, shoppers, headers[name]))
    catalog.configure(herd, catalog.HERD, replicas=catalog.REPLICAS)
    return BaselineFigures(
        mixes={name: median_run(found) for name, found in runs.items()},
        uniform={name: median_run(found) for name, found in uniform_runs.items()},
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
        *runs_table(
            [(f"mix, {HERD}", herd), (f"mix, {COMPETENT}", competent)]
            + [(f"uniform mix, {name}", run) for name, run in figures.uniform.items()]
        ),
        "",
        f"- Herd / competent baseline: **{herd.rps / competent.rps:.2f}x** the requests/s; "
        f"p50 **{herd.p50_ms / competent.p50_ms:.2f}x**, p99 **{herd.p99_ms / competent.p99_ms:.2f}x**",
    ]
    if figures.uniform:
        flat = figures.uniform[HERD].rps / figures.uniform[COMPETENT].rps
        lines.append(f"- with every product equally likely (the uniform mix): **{flat:.2f}x** the requests/s")
    lines += [
        "",
        f"Stale reads: during each run a probe writes to one of the {HOT_PRODUCTS} most viewed products, "
        "in turn a review (the product page's form) and a new price (the admin's form), then reads "
        "the page as the writer and as a visitor without cookies; a page without what was just "
        "written is stale (summed over the rounds).",
        "",
        "| configuration | reviews | price changes | stale, writer | stale, visitor | writes failed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, reads in figures.stale.items():
        lines.append(
            f"| {name} | {reads.reviews} | {reads.product_changes} | {reads.author} | {reads.visitor} "
            f"| {reads.failed_writes} |"
        )
    ratio, herd_stale = herd.rps / competent.rps, figures.stale[HERD].author + figures.stale[HERD].visitor
    met = "yes" if ratio >= 1.5 and herd_stale == 0 else "no"
    lines += [
        "",
        "| target | measured | met |",
        "|---|---:|---|",
        f"| Herd ≥ 1.5x the competent baseline's req/s on the mix, 0 stale reads "
        f"| {ratio:.2f}x, {herd_stale} stale | {met} |",
    ]
    if figures.uniform:
        lines.append(
            f"| Herd not slower than the competent baseline on the uniform mix | {flat:.2f}x "
            f"| {'yes' if flat >= 1.0 else 'no'} |"
        )
    return [*lines, ""]


def history(figures: BaselineFigures) -> Figures:
    """This part's figures for the history (bench/rendering.py)."""
    herd, competent = figures.mixes[HERD], figures.mixes[COMPETENT]
    measures = {}
    for name, reads in figures.stale.items():
        measures[f"stale reads, {name} (author + visitor)"] = reads.author + reads.visitor
        measures[f"writes probed, {name}"] = reads.reviews + reads.product_changes
    ratios = {"mix: Herd / competent baseline, req/s": herd.rps / competent.rps}
    rates = {"mix, Herd (beside the baseline)": herd.rps, f"mix, {COMPETENT}": competent.rps}
    if figures.uniform:
        ratios["uniform mix: Herd / competent baseline, req/s"] = (
            figures.uniform[HERD].rps / figures.uniform[COMPETENT].rps
        )
        rates |= {f"uniform mix, {name}": run.rps for name, run in figures.uniform.items()}
    return {"ratios": ratios, "requests/s": rates, "measures": measures}


def main() -> None:
    print("\n".join(render(Part("baseline", measure()))))


if __name__ == "__main__":
    main()
