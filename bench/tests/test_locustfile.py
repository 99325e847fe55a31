"""The Locust scenario's mix is the benchmarks' mix. Read from bench/locustfile.py's source:
importing it would monkey-patch this process for gevent."""

import ast
from collections import Counter

import pytest

from bench import catalog
from bench.rendering import ROOT


def locustfile_constants() -> dict:
    tree = ast.parse((ROOT / "bench" / "locustfile.py").read_text())
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
        if isinstance(node.value, (ast.Constant, ast.Dict, ast.List))
    }


def kind(path: str) -> str:
    if path.startswith("/p/"):
        return "product page"
    if path.startswith("/c/"):
        return "category page"
    if path.startswith("/products/?q="):
        return "search"
    return "list page" if path == "/products/" else "home"


def test_the_scenario_draws_page_kinds_in_the_benchmark_mix_shares():
    paths = catalog.mix_paths([f"product-{n}" for n in range(5000)], [f"category-{n}" for n in range(40)])
    counts = Counter(kind(path) for path in paths)
    shares = {name: 100 * count / len(paths) for name, count in counts.items()}
    mix = locustfile_constants()["MIX"]
    assert mix.keys() == shares.keys()
    for name, share in shares.items():
        assert mix[name] == pytest.approx(share, abs=0.1), name
    # wrk's script: 1 in 10 of a logged-in shopper's requests is a review post when it drew a product page.
    assert locustfile_constants()["REVIEW_SHARE"] == pytest.approx(shares["product page"] / 1000, abs=0.005)


def test_the_scenario_searches_and_logs_in_as_the_benchmark_does():
    constants = locustfile_constants()
    assert constants["SEARCH_WORDS"] == catalog.SEARCH_WORDS
    assert constants["BENCH_PASSWORD"] == catalog.PASSWORD


def test_the_uniform_mix_has_as_many_product_pages_every_product_equally_likely():
    slugs, categories = [f"product-{n}" for n in range(5000)], [f"category-{n}" for n in range(40)]
    zipf, uniform = catalog.mix_paths(slugs, categories), catalog.mix_paths(slugs, categories, uniform=True)
    assert Counter(map(kind, uniform)) == Counter(map(kind, zipf))
    views = Counter(path for path in uniform if path.startswith("/p/"))
    assert len(views) == 5000 and max(views.values()) - min(views.values()) <= 1
