"""Notification writes per second with one shard database against two.

Uses the data services of the ``bench`` profile (``BENCH_PROFILE`` picks another: the
tests' ``test`` with ``HERD_TEST_SLOT``), starting them if needed. For each layout it
makes fresh databases in the profile's primary server (a main one and one or two shard
databases), migrates them, then runs ``BENCH_WRITERS`` writer processes for
``BENCH_SECONDS`` per round, ``BENCH_ROUNDS`` rounds alternating between the layouts. A writer does what
``notifications.services.notify`` does to the database: ``scaling.sharding.shards.writing``
(the ownership row locked ``FOR SHARE``), the INSERT (its id made by ``herd_next_id``),
the commit; not the socket push. Users cycle over all 1024 logical shards, so with two
databases half the writes go to each. Prints a Markdown table of medians and the ratio.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

from bench.rendering import Figures, Part, failed
from deploy.herd.control import Herd
from deploy.herd.profiles import PROFILES, VENV_PYTHON

ROOT = Path(__file__).resolve().parent.parent

PROFILE = PROFILES[os.environ.get("BENCH_PROFILE", "bench")]
WRITERS = int(os.environ.get("BENCH_WRITERS", "4"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
LAYOUTS = {"one shard database": 1, "two shard databases": 2}


def layout_env(shard_count: int) -> dict[str, str]:
    port = PROFILE.port(55432)
    main = f"bench_shards_{shard_count}"
    urls = ",".join(f"postgres://herd@127.0.0.1:{port}/{main}_shard{n}" for n in range(1, shard_count + 1))
    return {
        **PROFILE.django_env(),
        "DATABASE_URL": f"postgres://herd@127.0.0.1:{port}/{main}",
        "DATABASE_REPLICA_URLS": "",
        "SHARD_DATABASE_URLS": urls,
        "SHARD_REPLICA_URLS": "",  # writes only: no replicas
        "DJANGO_LOG_LEVEL": "WARNING",
        "PATH": os.environ.get("PATH", ""),
    }


def fresh_databases(shard_count: int) -> dict[str, str]:
    import psycopg

    env = layout_env(shard_count)
    main = f"bench_shards_{shard_count}"
    names = [main, *(f"{main}_shard{n}" for n in range(1, shard_count + 1))]
    with psycopg.connect(
        host="127.0.0.1", port=PROFILE.port(55432), user="herd", dbname="postgres", autocommit=True
    ) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([str(VENV_PYTHON), "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    return env


def writer(number: int, start_at: float, stop_at: float) -> None:
    """One writer process: notification rows for users on every logical shard, until ``stop_at``."""
    import django

    django.setup()
    from notifications.models import Notification
    from scaling.sharding import shards

    user_ids = [number * 1_000_000 + shard for shard in range(shards.LOGICAL_SHARDS)]
    for alias in shards.shard_aliases():  # connect before the clock starts
        with shards.writing(shards.LOGICAL_SHARDS - 1):
            pass
        Notification.objects.using(alias).exists()
    while time.time() < start_at:
        time.sleep(0.001)
    written = 0
    while time.time() < stop_at:
        user_id = user_ids[written % len(user_ids)]
        with shards.writing_for_user(user_id) as alias:
            Notification.objects.using(alias).create(user_id=user_id, title=f"bench {written}", body="")
        written += 1
    print(written)


def one_round(env: dict[str, str]) -> float:
    start_at = time.time() + 3.0  # every writer has imported Django by then
    stop_at = start_at + SECONDS
    processes = [
        subprocess.Popen(
            [str(VENV_PYTHON), "-m", "bench.shards", "--writer", str(n), str(start_at), str(stop_at)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(WRITERS)
    ]
    total = sum(int(process.communicate()[0].strip().splitlines()[-1]) for process in processes)
    return total / SECONDS


@dataclass(frozen=True)
class ShardFigures:
    writers: int
    seconds: float
    rounds: int
    one_database: float  # writes/s, median of the rounds
    two_databases: float

    @property
    def ratio(self) -> float:
        return self.two_databases / self.one_database


def measure() -> ShardFigures:
    """Notification writes/s with one shard database and with two, rounds alternating."""
    Herd(PROFILE).start_services()
    envs = {label: fresh_databases(shard_count) for label, shard_count in LAYOUTS.items()}
    rates: dict[str, list[float]] = {label: [] for label in LAYOUTS}
    # Rounds alternate between the layouts, so a change in the machine's load weighs on both.
    for _round in range(ROUNDS):
        for label, env in envs.items():
            rates[label].append(one_round(env))
    for label, values in rates.items():
        print(f"  {label}: {', '.join(f'{rate:,.0f}' for rate in values)} writes/s", file=sys.stderr, flush=True)
    one, two = (statistics.median(rates[label]) for label in LAYOUTS)
    return ShardFigures(WRITERS, SECONDS, ROUNDS, one, two)


def render(part: Part) -> list[str]:
    """This part's section of the report (bench/report.py): its table, or why it failed."""
    lines = ["### Shards (bench/shards.py)", ""]
    if not part.ok:
        return lines + failed(part)
    value = part.value
    if is_dataclass(value):
        value = asdict(value)
    if not isinstance(value, dict):
        return [*lines, f"{value}", ""]
    lines += [
        f"{value['writers']} writer processes, {value['seconds']:g} s per round, median of {value['rounds']} rounds;"
        " both layouts are databases in the bench primary's one PostgreSQL server (see the notes below).",
        "",
        "| layout | notification writes/s |",
        "|---|---:|",
        f"| one shard database | {value['one_database']:,.0f} |",
        f"| two shard databases | {value['two_databases']:,.0f} |",
        f"| two / one | {value['two_databases'] / value['one_database']:.2f} |",
    ]
    return [*lines, ""]


def history(figures: ShardFigures) -> Figures:
    """This part's figures for the history (bench/rendering.py): writes/s per layout and their ratio."""
    rates = {"notification writes/s, one shard database": figures.one_database}
    rates["notification writes/s, two shard databases"] = figures.two_databases
    return {"ratios": {"notification writes: two shard databases / one": figures.ratio}, "requests/s": rates}


def main() -> None:
    figures = measure()
    print(f"\n### Notification writes per second ({platform.node()}, {os.cpu_count()} cores)\n")
    print(f"{figures.writers} writer processes, {figures.seconds:g} s per round, median of {figures.rounds} rounds.\n")
    print("| layout | writes/s |")
    print("|---|---:|")
    print(f"| one shard database | {figures.one_database:,.0f} |")
    print(f"| two shard databases | {figures.two_databases:,.0f} |")
    print(f"| ratio two / one | {figures.ratio:.2f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--writer"]:
        writer(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    else:
        main()
