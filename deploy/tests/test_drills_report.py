"""How ``deploy/drills.py`` writes its block of docs/RELIABILITY.md: a full run replaces it; a
run of some drills merges its rows and notes into it, each other row kept with the date and
commit of its own run. On a file of its own (no herd)."""

from types import SimpleNamespace

import pytest

from deploy import drills


def result(name: str, requests: int, notes: list[str]) -> drills.Result:
    report = SimpleNamespace(
        requests=requests, idempotent_failed=0, writes_failed=0, saved_reviews=["a"], sessions_lost=0
    )
    return drills.Result(name, report, 1, 0, [], notes)


def test_a_run_of_some_drills_merges_its_rows_and_keeps_the_others_with_their_own_run(tmp_path, monkeypatch):
    report = tmp_path / "RELIABILITY.md"
    report.write_text("# Reliability\n\nprose before\n\nprose after\n")
    monkeypatch.setattr(drills, "provenance", lambda: "aaaaaaa")
    full = [result(name, 100, [f"{name} full note"]) for name in drills.DRILLS]
    drills.write_report(report, drills.render(full, 60.0), full=True)
    monkeypatch.setattr(drills, "provenance", lambda: "bbbbbbb")
    some = [result("db-primary-stop", 7, ["stop again"]), result("replica-stop", 9, ["stop, again"])]
    drills.write_report(report, drills.render(some, 30.0, "`python -m deploy.drills x`"), full=False)

    text = report.read_text()
    assert text.count(drills.BEGIN) == 1 and "prose before" in text and "prose after" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert set(drills.DRILLS) <= set(rows)  # no row lost
    assert "| 9 |" in rows["replica-stop"] and "bbbbbbb |" in rows["replica-stop"]
    assert "| 7 |" in rows["db-primary-stop"] and "bbbbbbb |" in rows["db-primary-stop"]
    assert "| 100 |" in rows["replica-sigkill"] and "aaaaaaa |" in rows["replica-sigkill"]
    assert "commit aaaaaaa" in text  # the heading still names the full run
    assert "  - replica-sigkill full note" in text and "  - stop, again" in text
    assert "  - replica-stop full note" not in text
    order = [name for name in rows if name in drills.DRILLS]
    assert order == list(drills.DRILLS)

    # A full run replaces the merged block.
    monkeypatch.setattr(drills, "provenance", lambda: "ccccccc")
    drills.write_report(report, drills.render(full, 60.0), full=True)
    assert "bbbbbbb" not in report.read_text() and "stop again" not in report.read_text()


def test_a_run_of_every_drill_a_block_holds_replaces_it(tmp_path, monkeypatch):
    """A block of one drill: a new run of it is the block, its heading too."""
    report = tmp_path / "RELIABILITY.md"
    monkeypatch.setattr(drills, "provenance", lambda: "aaaaaaa")
    drills.write_report(report, drills.render([result("primary-failover", 5, ["old"])], 1.0), False)
    monkeypatch.setattr(drills, "provenance", lambda: "bbbbbbb")
    drills.write_report(report, drills.render([result("primary-failover", 6, ["new"])], 1.0), False)
    text = report.read_text()
    assert "aaaaaaa" not in text and "commit bbbbbbb" in text and "  - new" in text
    assert text.count(drills.BEGIN) == 1


def test_only_runs_on_the_ha_tier_are_written(tmp_path, monkeypatch):
    """``--postgres plain`` prints its block; the report keeps the HA tier's. Every drill runs
    on the HA tier by default, and a drill that needs Patroni is refused on the plain one."""
    ran = []
    monkeypatch.setattr(drills, "REPORT", tmp_path / "RELIABILITY.md")
    rig = SimpleNamespace(herd=None)
    monkeypatch.setattr(drills, "prepare", lambda timing, with_worker, patroni: ran.append(patroni) or rig)
    monkeypatch.setattr(drills, "run_drill", lambda rig, drill: result(drill.name, 30, []))
    monkeypatch.setattr(drills, "wait_all_up", lambda herd: None)
    monkeypatch.setattr(drills, "provenance", lambda: "aaaaaaa")

    assert drills.main(["--postgres", "plain", "db-primary-stop"]) == 0
    assert not drills.REPORT.exists()
    assert drills.main(["db-primary-stop", "primary-failover"]) == 0
    assert "| primary-failover | 30 |" in drills.REPORT.read_text()
    assert "under Patroni" in drills.REPORT.read_text()
    assert ran == [False, True]
    with pytest.raises(SystemExit):
        drills.main(["--postgres", "plain", "primary-failover"])
