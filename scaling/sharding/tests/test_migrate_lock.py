"""``manage.py migrate`` runs one at a time: two concurrent runs (threads, each with its
own PostgreSQL session) serialise on the advisory lock, and overlap without it."""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
import time
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg.rows import dict_row

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


def documented_query() -> str:
    """The query docs/DEPLOY.md gives under "A stuck migration" (its ```sql block on pg_locks)."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "DEPLOY.md").read_text()
    (query,) = [block for block in re.findall(r"```sql\n(.*?)```", text, re.S) if "pg_locks" in block]
    return query


def test_the_documented_query_names_the_holder_and_ending_it_frees_the_lock():
    """An operator runs the documented query: it names the holding session's pod
    (``application_name``) above the waiting one; ``pg_terminate_backend`` on the holder,
    as the doc says to do for a pod that is gone, lets the waiting run take the lock."""
    waited = threading.Event()

    def another_run():
        with migrate.migration_lock([DEFAULT_DB_ALIAS]):
            waited.set()

    with migrate.migration_lock([DEFAULT_DB_ALIAS]):
        waiting = threading.Thread(target=another_run, daemon=True)
        waiting.start()
        # The operator's psql: a session of its own, each statement its own transaction
        # (a transaction would keep its first snapshot of pg_stat_activity).
        params = {**connections[DEFAULT_DB_ALIAS].get_connection_params(), "autocommit": True}
        with psycopg.connect(**params, row_factory=dict_row) as psql:
            deadline = time.monotonic() + 5
            rows = []
            while len(rows) < 2 and time.monotonic() < deadline:
                rows = psql.execute(documented_query()).fetchall()
            holder, waiter = rows
            assert (holder["granted"], waiter["granted"]) == (True, False)
            assert holder["application_name"] == waiter["application_name"] == migrate.lock_holder_name()
            assert not waited.is_set()
            psql.execute("SELECT pg_terminate_backend(%s)", [holder["pid"]])
        assert waited.wait(5), "the waiting run did not get the lock"
    waiting.join(5)
