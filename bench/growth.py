"""How the catalog's cost grows with its data: the same requests at 10,000 and at 1,000,000 products.

Two databases on the ``bench`` herd's primary (and so on its replica): ``herd`` with
``BENCH_PRODUCTS`` products (bench/catalog.py loads it) and ``herd_small`` with
``BENCH_SMALL_PRODUCTS`` (10,000), both loaded once and kept. The app replicas are
restarted on each in turn, with the query and object caches off and past the edge cache,
so every request runs its queries (with the caches on, a warm page runs none whatever
the size): list pages (``/products/``), product pages (random products), searches
(``/products/?q=...``). p50 and p99 per database, medians over the rounds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import matplotlib.pyplot as plt

from bench import catalog
from bench.rendering import CONVENTIONAL_COLOR, HERD_COLOR, Figures, Part, chart, failed
from bench.wrk import NO_EDGE_CACHE, Run, median_run
from deploy.herd.control import Herd

SMALL_PRODUCTS = int(os.environ.get("BENCH_SMALL_PRODUCTS", "10000"))
SMALL_DATABASE = "herd_small"
CONNECTIONS = 4
SEARCH_WORDS = ("a", "pro", "max", "mini", "eco")


@dataclass
class GrowthFigures:
    products: dict[str, int]  # database -> products in it
    runs: dict[str, dict[str, Run]]  # database -> request kind -> median run


def requests_of(database: str) -> dict[str, list[str]]:
    slugs = catalog.sample_slugs(2000, database)
    return {
        "list": ["/products/"],
        "detail": [f"/p/{slug}/" for slug in slugs],
        "search": [f"/products/?q={word}" for word in SEARCH_WORDS],
    }


def measure(herd: Herd | None = None, rounds: int = catalog.ROUNDS) -> GrowthFigures:
    herd = herd or catalog.prepare()
    catalog.load_products(SMALL_PRODUCTS, SMALL_DATABASE)
    databases = [SMALL_DATABASE, herd.database]
    products = {db: catalog.sql("SELECT count(*) FROM catalog_product", database=db)[0][0] for db in databases}
    paths = {db: requests_of(db) for db in databases}
    runs: dict[str, dict[str, list[Run]]] = {db: {kind: [] for kind in paths[db]} for db in databases}
    big = herd.database
    try:
        for _ in range(rounds):
            for db in databases:
                herd.database = db
                catalog.configure(herd, catalog.CACHES_OFF)
                for kind, kind_paths in paths[db].items():
                    runs[db][kind].append(catalog.run_paths(kind_paths, None, NO_EDGE_CACHE, CONNECTIONS))
    finally:
        herd.database = big
    catalog.configure(herd, catalog.HERD)
    return GrowthFigures(products, {db: {k: median_run(r) for k, r in kinds.items()} for db, kinds in runs.items()})


def render(part: Part) -> list[str]:
    """This part's section of the report (bench/report.py): its tables and charts, or why it failed."""
    lines = ["### Cost growth with data (bench/growth.py)", ""]
    if not part.ok:
        return lines + failed(part)
    figures: GrowthFigures = part.value
    small, big = list(figures.runs)
    lines += [
        "The same requests against two databases of the same herd, with the query and object caches "
        "off and past the edge cache, so each request runs its queries (a warm cached page runs "
        f"none at any size); wrk -c{CONNECTIONS}.",
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

    return [*lines, chart("data-growth.png", draw), ""]


def history(figures: GrowthFigures) -> Figures:
    """This part's figures for the history (bench/rendering.py): p50 growth per request kind, and req/s."""
    small, big = list(figures.runs)
    ratios = {
        f"{kind}: p50 at {figures.products[big]:,} / at {figures.products[small]:,} products": (
            figures.runs[big][kind].p50_ms / figures.runs[small][kind].p50_ms
        )
        for kind in figures.runs[small]
    }
    rates = {
        f"{kind} (caches off), {figures.products[db]:,} products": run.rps
        for db, kinds in figures.runs.items()
        for kind, run in kinds.items()
    }
    return {"ratios": ratios, "requests/s": rates}


def main() -> None:
    figures = measure()
    print(f"## Cost growth with data (caches off, wrk -c{CONNECTIONS})\n")
    print("| request | products | req/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for db, kinds in figures.runs.items():
        for kind, result in kinds.items():
            print(
                f"| {kind} | {figures.products[db]:,} | {result.rps:.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f} |"
            )


if __name__ == "__main__":
    main()
