"""``manage.py migrate`` runs one at a time: two concurrent runs (threads, each with its
own PostgreSQL session) serialise on the advisory lock, and overlap without it."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import DEFAULT_DB_ALIAS

from scaling.sharding.management.commands import migrate

pytestmark = pytest.mark.django_db(databases="__all__")

HOLD = 0.3  # seconds each database's migration takes


def concurrent_runs(monkeypatch, runs: int = 2) -> list[tuple[float, float]]:
    """Start ``runs`` full migrates at once, each database's migration replaced by a
    ``HOLD`` s sleep; each run's span (first start, last end)."""
    spans: dict[str, list[float]] = {}

    def migrate_one(self, *args, **options):
        name = threading.current_thread().name
        spans.setdefault(name, []).append(time.monotonic())
        time.sleep(HOLD)
        spans[name].append(time.monotonic())

    monkeypatch.setattr(DjangoMigrate, "handle", migrate_one)
    threads = [
        threading.Thread(target=call_command, args=("migrate",), kwargs={"verbosity": 0}, name=f"run{n}")
        for n in range(runs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(spans) == runs
    return sorted((min(times), max(times)) for times in spans.values())


def overlap(spans: list[tuple[float, float]]) -> bool:
    return any(later_start < earlier_end for (_, earlier_end), (later_start, _) in itertools.pairwise(spans))


def test_two_concurrent_migrates_run_one_after_the_other(monkeypatch):
    spans = concurrent_runs(monkeypatch)
    assert not overlap(spans), spans
    print(f"two concurrent migrates: the second started {spans[1][0] - spans[0][1]:+.3f}s after the first ended")


def test_without_the_lock_they_overlap(monkeypatch):
    """The test above can fail: with the lock made a no-op, the runs overlap."""
    monkeypatch.setattr(migrate, "migration_lock", lambda aliases, say=None: contextlib.nullcontext())
    assert overlap(concurrent_runs(monkeypatch))


def test_a_waiting_run_says_so_and_check_takes_no_lock():
    said = []

    def another_run():
        with migrate.migration_lock([DEFAULT_DB_ALIAS], said.append):
            pass

    with migrate.migration_lock([DEFAULT_DB_ALIAS]):
        # --check reads what is applied without waiting for the lock held here.
        call_command("migrate", "--check", verbosity=0)
        waiting = threading.Thread(target=another_run, daemon=True)
        waiting.start()
        waiting.join(1)
        assert waiting.is_alive()  # blocked on the lock held here
    waiting.join(5)
    assert not waiting.is_alive()
    assert said == ["Another migrate runs on default: waiting for it to finish."]


def test_migrate_is_safe_to_run_again():
    call_command("migrate", verbosity=0)
    call_command("migrate", "--check", verbosity=0)  # nothing left unapplied
