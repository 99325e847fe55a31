"""Every run counts: the history of ``make bench`` runs (bench/rendering.py, bench/report.py)
and what the report shows of it, on synthetic runs (no benchmark runs here)."""

import contextlib
import io
import types
import xml.etree.ElementTree as ET

import pytest

from bench import baseline, catalog, images, probes, rendering, report, targets
from bench.rendering import Part
from bench.wrk import Run

SVG = "{http://www.w3.org/2000/svg}"


def a_run(day: int, herd_ratio: float, short: bool = False, **extra: float) -> dict:
    return {
        "date": f"2026-12-{day:02d} 10:00",
        "commit": f"c{day:02d}",
        "machine": {"cores": 2, "memory_gib": 23.5, "kernel": "6.18"},
        "short": short,
        "figures": {
            "ratios": {"mix: Herd / conventional, req/s": herd_ratio, **extra},
            "requests/s": {"mix, Herd": 100 * herd_ratio},
        },
    }


@pytest.fixture
def history(tmp_path):
    path = tmp_path / "history.jsonl"
    for day, ratio in enumerate([1.0, 3.0, 1.5, 2.0], start=1):
        rendering.append_history(a_run(day, ratio), path)
    rendering.append_history(a_run(5, 9.0, short=True), path)
    rendering.append_history(a_run(6, 1.2, **{"deep list page / page 1, p50": 1.1}), path)
    return path


def test_each_run_is_appended_and_read_back_oldest_first(history):
    runs = rendering.read_history(history)
    assert [run["commit"] for run in runs] == ["c01", "c02", "c03", "c04", "c05", "c06"]
    rendering.append_history(a_run(7, 1.3), history)
    assert [run["commit"] for run in rendering.read_history(history)][-2:] == ["c06", "c07"]


def test_the_spread_is_over_the_last_full_runs_short_runs_left_out(history):
    recent = rendering.counted(rendering.read_history(history), last=4)
    assert [run["commit"] for run in recent] == ["c02", "c03", "c04", "c06"]
    spread = rendering.spreads(recent, "ratios")
    assert spread["mix: Herd / conventional, req/s"] == rendering.Spread(
        last=1.2, median=1.75, low=1.2, high=3.0, runs=4
    )
    assert spread["deep list page / page 1, p50"].runs == 1


def test_the_report_shows_median_and_range_not_the_best_run(history, tmp_path, monkeypatch):
    monkeypatch.setattr(rendering, "CHARTS", tmp_path / "perf")
    lines = rendering.history_section(rendering.read_history(history), last=4)
    text = "\n".join(lines)
    assert "| mix: Herd / conventional, req/s | **1.75** | 1.20-3.00 | 1.20 | 4 |" in lines
    assert "| mix, Herd | **175** | 120-300 | 120 | 4 |" in lines
    assert "9.00" not in text  # the short run
    assert "c02" in text and "c06" in text and "short runs left out: 1 in the history" in text
    assert "![history of the ratios, oldest run left](perf/history.svg)" in lines
    assert (tmp_path / "perf" / "history.svg").exists()


def test_the_chart_draws_each_ratio_over_the_runs_highest_value_on_top(history):
    recent = rendering.counted(rendering.read_history(history), last=4)
    svg = ET.fromstring(rendering.history_svg(recent))  # noqa: S314 (our own output)
    lines = svg.findall(f"{SVG}polyline")
    assert len(lines) == 2  # one per ratio
    points = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    assert len(points) == 4
    xs, ys = zip(*points, strict=True)
    assert list(xs) == sorted(xs)
    assert ys.index(min(ys)) == 0  # 3.0, the highest, drawn highest
    assert ys.index(max(ys)) == 3  # 1.2, the lowest
    titles = [t.text for t in svg.findall(f"{SVG}text") if t.get("font-weight") == "bold"]
    assert titles == ["mix: Herd / conventional, req/s", "deep list page / page 1, p50"]


def test_an_empty_history_says_so(tmp_path):
    assert rendering.read_history(tmp_path / "none.jsonl") == []
    assert "No full run in the history yet." in rendering.history_section([])


def catalog_figures() -> catalog.CatalogFigures:
    run = Run(rps=200, p50_ms=10, p99_ms=40, errors=0)
    return catalog.CatalogFigures(
        products=1000,
        replicas=2,
        pages={
            "minimal view (app)": Run(1000, 5, 20, 0),
            "warm product page, edge cache": Run(40000, 1, 2, 0),
            "warm product page (app)": Run(900, 6, 25, 0),
            "product page, cookie without a session (app)": Run(800, 7, 28, 0),
            "product page, logged in (app)": Run(600, 8, 30, 0),
            "product list, logged in (app)": Run(400, 12, 40, 0),
            "product page, conventional (no caches)": Run(180, 30, 90, 0),
        },
        mixes={"Herd": Run(300, 20, 80, 0), "conventional": Run(150, 40, 100, 0)},
        replica_share=0.96,
        cache_hits=None,
        primary_selects=[],
        keyset={"list page 1": run, "list page 40": Run(190, 11, 44, 0)},
        deep_page=40,
        settings={"rounds": "1", "duration": "3s", "connections": "16", "users": "64"},
        round_trips={
            "product page, cookie without a session (app)": {
                "PostgreSQL replica": {"SELECT": 0.01},
                "Redis cache": {"MGET": 2.0},
            },
            "product page, logged in (app)": {
                "PostgreSQL replica": {"SELECT": 3.0, "SET": 0.02},
                "Redis state": {"GET": 2.0},
                "Redis cache": {"MGET": 2.0, "GET": 1.0},
            },
        },
    )


def test_a_run_records_every_ratio_and_rate_of_its_parts_and_which_failed():
    figures = catalog_figures()
    parts = {"catalog": Part("catalog", figures), "growth": Part("growth", error="RuntimeError: no herd")}
    entry = report.history_entry(parts, wall_seconds=600)
    assert entry["parts"] == {"catalog": "ok", "growth": "failed"}
    ratios, rates = entry["figures"]["ratios"], entry["figures"]["requests/s"]
    assert ratios["mix: Herd / conventional, req/s"] == 2.0
    assert ratios["warm product page (app) / minimal view"] == 0.9
    assert ratios["warm product page (app) / no caches"] == 5.0
    assert ratios["deep list page / page 1, p50"] == 1.1
    assert ratios["product page, logged in (app) / minimal view"] == 0.6
    assert ratios["product list, logged in (app) / minimal view"] == 0.4
    assert rates["product page, logged in (app)"] == 600
    assert ratios["product page, cookie without a session (app) / minimal view"] == 0.8
    measures = entry["figures"]["measures"]
    assert measures["product page, logged in (app): SQL statements per request"] == 3.0
    assert measures["product page, logged in (app): Redis commands per request"] == 5.0
    assert measures["product page, cookie without a session (app): SQL statements per request"] == 0
    assert rates["mix, Herd"] == 300 and rates["minimal view (app)"] == 1000 and rates["list page 40"] == 190
    assert entry["machine"]["cores"] and entry["commit"] and entry["date"]


def test_the_baseline_records_its_ratio_and_the_stale_reads_of_each_configuration():
    figures = baseline.BaselineFigures(
        mixes={"Herd": Run(300, 20, 80, 0), "competent baseline": Run(200, 40, 100, 0)},
        stale={
            "Herd": baseline.StaleReads(reviews=6, product_changes=6, visitor=1),
            "competent baseline": baseline.StaleReads(reviews=5, product_changes=4, author=0, visitor=6),
        },
        workers=5,
        cache_seconds=60,
        uniform={"Herd": Run(180, 30, 90, 0), "competent baseline": Run(200, 40, 100, 0)},
    )
    entry = report.history_entry({"baseline": Part("baseline", figures)}, wall_seconds=60)
    assert entry["figures"]["ratios"] == {
        "mix: Herd / competent baseline, req/s": 1.5,
        "uniform mix: Herd / competent baseline, req/s": 0.9,
    }
    assert entry["figures"]["measures"]["stale reads, Herd (author + visitor)"] == 1
    assert entry["figures"]["measures"]["stale reads, competent baseline (author + visitor)"] == 6


def test_the_picture_part_records_its_ratio_to_the_minimal_view_and_the_app_requests_it_caused():
    served = {
        images.MINIMAL_VIEW: images.Served(Run(1000, 5, 20, 0, 8000), 8000, 0.9, 0.05),
        images.PICTURE: images.Served(Run(9000, 1, 3, 0, 72000), 0, 0.001, 0.04),
    }
    first = [
        images.FirstRequest("first request", 200, "", "web1", 12.0, 1),
        images.FirstRequest("second request", 200, "hit", "web1", 0.8, 0),
    ]
    figures = images.ImageFigures("/media/products/a.webp", 5000, served, 0, first)
    entry = report.history_entry({"images": Part("images", figures)}, wall_seconds=60)
    assert entry["parts"] == {"images": "ok"}
    assert entry["figures"]["ratios"]["prepared picture (media cache) / minimal view"] == 9.0
    assert entry["figures"]["measures"]["app requests during the picture runs"] == 0
    shown = "\n".join(images.render(Part("images", figures)))
    assert "| prepared picture, media cache | 0 | 0.001 |" in shown
    assert "| first request | 200 | (miss) | web1 |" in shown and "| second request | 200 | hit | web1 |" in shown


def test_the_catalog_part_shows_the_logged_in_pages_against_the_minimal_view_and_their_target(tmp_path, monkeypatch):
    monkeypatch.setattr(rendering, "CHARTS", tmp_path)
    text = "\n".join(catalog.render(Part("catalog", catalog_figures())))
    assert "| product page, logged in (app) | 600 |" in text and "| product list, logged in (app) | 400 |" in text
    assert "- product page, logged in (app) / minimal view: **0.60**" in text
    assert "- product list, logged in (app) / minimal view: **0.40**" in text
    assert "| logged-in product page ≥ 0.5x the minimal view | 0.60x | yes |" in text


def test_the_catalog_part_says_by_how_much_the_logged_in_page_misses_and_where_its_time_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(rendering, "CHARTS", tmp_path)
    figures = catalog_figures()
    figures.pages["product page, logged in (app)"] = Run(250, 60, 90, 0)
    lines = catalog.render(Part("catalog", figures))
    text = "\n".join(lines)
    # The targets table first, then the breakdown under it.
    assert text.index("| logged-in product page ≥ 0.5x the minimal view | 0.25x | no |") < text.index(
        "### Where the logged-in product page's time goes"
    )
    # 1000 / req/s: 1.00 ms the minimal view, 1.11 warm, 1.25 without a session, 4.00 logged in.
    assert "| minimal view (app) | 1.00 | |" in lines
    assert "| warm product page (app), anonymous | 1.11 | +0.11 |" in lines
    assert "| product page, cookie without a session (app) | 1.25 | +0.25 |" in lines
    assert "| product page, logged in (app) | 4.00 | +3.00 |" in lines
    assert "Target missed by **2.00 ms** per request" in text and "(2.0 times as long)" in text
    assert "**0.25 ms** is the page itself" in text and "**2.75 ms** the shopper's own work" in text
    assert "| Redis state | 0 | 2.0 (GET 2.0) |" in lines
    assert "| Redis cache | 2.0 (MGET 2.0) | 3.0 (MGET 2.0, GET 1.0) |" in lines
    assert "| PostgreSQL replica | 0 | 3.0 (SELECT 3.0) |" in lines  # background left out


def test_figures_from_before_the_cookie_without_a_session_row_render_without_the_breakdown(tmp_path, monkeypatch):
    monkeypatch.setattr(rendering, "CHARTS", tmp_path)
    figures = catalog_figures()
    del figures.pages["product page, cookie without a session (app)"]
    figures.round_trips = {}
    text = "\n".join(catalog.render(Part("catalog", figures)))
    assert "| logged-in product page ≥ 0.5x the minimal view | 0.60x | yes |" in text
    assert "time goes" not in text
    assert report.history_entry({"catalog": Part("catalog", figures)}, wall_seconds=60)["figures"]["measures"] == {}


def test_each_target_is_judged_in_each_run_and_met_only_if_every_run_met_it():
    runs = [
        a_run(1, 2.0, **{"mix: Herd / competent baseline, req/s": 1.6}),
        a_run(2, 2.0, **{"mix: Herd / competent baseline, req/s": 1.4}),
        a_run(3, 2.0, **{"mix: Herd / competent baseline, req/s": 2.0}),
    ]
    runs[2]["figures"]["requests/s"]["minimal view (app)"] = 250.0  # mix, Herd: 200 req/s
    lines = targets.targets_table(runs)
    assert "| target | 12-01 10:00 c01 | 12-02 10:00 c02 | 12-03 10:00 c03 | met in each |" in lines
    row = next(line for line in lines if line.startswith("| mix: Herd ≥ 1.5x"))
    assert row.endswith("| 1.60x (yes) | 1.40x (no) | 2.00x (yes) | no (2 of 3) |")
    row = next(line for line in lines if line.startswith("| the whole mix ≥ 0.5x"))
    assert row.endswith("| n/a | n/a | 0.80x (yes) | yes (1 of 1) |")
    row = next(line for line in lines if line.startswith("| job completion to the socket"))
    assert row.endswith("| n/a | n/a | n/a | n/a |")


def test_every_target_reads_a_figure_the_newest_full_run_recorded():
    newest = rendering.counted(rendering.read_history(), last=1)[0]["figures"]
    assert all(target.value(newest) is not None for target in targets.TARGETS)


def test_the_catalog_part_says_where_the_mix_time_goes_by_view_and_what_the_edge_answered(tmp_path, monkeypatch):
    monkeypatch.setattr(rendering, "CHARTS", tmp_path)
    figures = catalog_figures()
    figures.mixes["Herd"] = Run(300, 20, 80, 0, 2400)
    figures.mix_views = {"catalog:product_list": (200.0, 4.0), "catalog:product": (1000.0, 3.0)}
    lines = catalog.render(Part("catalog", figures))
    text = "\n".join(lines)
    assert "| the whole mix ≥ 0.5x the minimal view's req/s | 0.30x | no |" in lines
    # 1000 / 300 = 3.33 ms per request; the minimal view 1.00 ms, so 2.00 ms allowed.
    assert "costs **3.33 ms** of the machine per request" in text and "missed by **1.33 ms**" in text
    assert "| HAProxy's edge cache | 1,200 | 50% | | |" in lines
    assert "| catalog:product_list | 200 | 8% | 20.00 | 57% |" in lines
    assert "| catalog:product | 1,000 | 42% | 3.00 | 43% |" in lines


def test_view_time_between_two_scrapes_leaves_out_views_with_no_new_request():
    before = {"catalog:product": (10.0, 0.5), "metrics": (3.0, 0.01)}
    after = {"catalog:product": (15.0, 0.75), "metrics": (3.0, 0.01), "unresolved": (4.0, 0.004)}
    assert probes.view_delta(before, after) == {"catalog:product": (5.0, 0.25), "unresolved": (4.0, 0.004)}


def test_view_time_sums_each_views_count_and_seconds_over_the_replicas_in_one_scrape_each(monkeypatch):
    text = (
        'herd_http_request_duration_seconds_bucket{replica="web1",le="0.001",view="catalog:product"} 9.0\n'
        'herd_http_request_duration_seconds_count{replica="web1",view="catalog:product"} 4.0\n'
        'herd_http_request_duration_seconds_sum{replica="web1",view="catalog:product"} 0.5\n'
        'herd_cache_lookups_total{cache="query",replica="web1",result="hit"} 3.0\n'
    )
    scraped = []

    def urlopen(url, timeout):
        scraped.append(url)
        return contextlib.nullcontext(io.BytesIO(text.encode()))

    monkeypatch.setattr(probes.urllib.request, "urlopen", urlopen)
    herd = types.SimpleNamespace(webs=lambda: [types.SimpleNamespace(port=8101), types.SimpleNamespace(port=8102)])
    assert probes.view_time(herd) == {"catalog:product": (8.0, 1.0)}
    assert scraped == ["http://127.0.0.1:8101/metrics", "http://127.0.0.1:8102/metrics"]
