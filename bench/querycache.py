"""Herd's query cache against django-cachalot, on the same queries, including stale reads.

    .venv/bin/python -m bench.querycache

Runs on the ``test`` profile's services, in a scratch database it creates and drops;
each system reads in a subprocess of its own (``cachalot``: ``bench.cachalot_settings``).
What it measures and how: docs/CACHING.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from deploy.herd.profiles import PROFILES, VENV_PYTHON

ROOT = Path(__file__).resolve().parent.parent

PROFILE = PROFILES["test"]
PG = PROFILE.port(55432)
PG_REPLICA = PG + 1
DATABASE = "herd_qcbench"
REDIS_DB = 11  # on both test Redis instances; the tests use 0 and 1
REDIS_PORTS = (PROFILE.port(56379), PROFILE.port(56380))

PRODUCTS = int(os.environ.get("BENCH_PRODUCTS", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
ITERATIONS = int(os.environ.get("BENCH_ITERATIONS", "40"))  # writes per round; each one miss per kind
HITS_PER_ITERATION = 3
STALE_TRIES = int(os.environ.get("BENCH_STALE_TRIES", "20"))
STALE_WINDOW = float(os.environ.get("BENCH_STALE_WINDOW", "3"))
REPLICA_DELAY = "2s"
POLL_SECONDS = 0.025

SYSTEMS = ("herd", "cachalot")
SETTINGS = {"herd": "config.settings", "cachalot": "bench.cachalot_settings"}
KINDS = ("category list", "search", "product by slug")
SEARCH = "oak lamp"
CARD = ("id", "name", "slug", "price", "stock", "rating_count", "rating_sum")


# --------------------------------------------------------------------------- parent


def sql(query: str, port: int = PG, dbname: str = "postgres") -> list[tuple]:
    with psycopg.connect(host="127.0.0.1", port=port, user="herd", dbname=dbname, autocommit=True) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def child_env(system: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", ""), **PROFILE.django_env(database=DATABASE)}
    env.update({name: value for name, value in os.environ.items() if name.startswith("BENCH_")})
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": SETTINGS[system],
            "REDIS_STATE_URL": f"redis://127.0.0.1:{REDIS_PORTS[0]}/{REDIS_DB}",
            "REDIS_CHANNELS_URL": f"redis://127.0.0.1:{REDIS_PORTS[0]}/{REDIS_DB}",  # unused here
            "REDIS_CACHE_URL": f"redis://127.0.0.1:{REDIS_PORTS[1]}/{REDIS_DB}",
            "HERD_RELEASE": "qcbench",
            "DJANGO_LOG_LEVEL": "WARNING",
            # Replica health is checked once, not in the middle of a timed read.
            "HERD_REPLICA_CHECK_INTERVAL": "3600",
        }
    )
    return env


def manage(*args: str) -> None:
    result = subprocess.run(
        [str(VENV_PYTHON), "manage.py", *args], env=child_env("herd"), cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


def run_child(system: str, mode: str, round_number: int = 0) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    try:
        subprocess.run(
            [str(VENV_PYTHON), "-m", "bench.querycache", "--child", system, mode, str(out), str(round_number)],
            env=child_env(system),
            cwd=ROOT,
            check=True,
        )
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def set_replica_delay(delay: str) -> None:
    with psycopg.connect(host="127.0.0.1", port=PG_REPLICA, user="herd", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)  # the startup process picks the value up on its next loop


def redis_dbs() -> list[redis.Redis]:
    return [redis.Redis(host="127.0.0.1", port=port, db=REDIS_DB) for port in REDIS_PORTS]


def _raise_on_sigterm(signum, frame) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    subprocess.run([sys.executable, "-m", "deploy.herd", "--profile", "test", "services"], cwd=ROOT, check=True)
    for client in redis_dbs():
        if client.dbsize():
            port = client.connection_pool.connection_kwargs["port"]
            raise SystemExit(f"Redis :{port} db {REDIS_DB} is not empty: someone else uses it; not touching it")
    delay_set = False
    try:
        sql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        sql(f"CREATE DATABASE {DATABASE}")
        print(f"scratch database {DATABASE}: migrating, seeding {PRODUCTS} products...", file=sys.stderr, flush=True)
        manage("migrate", "--noinput", "--skip-checks")
        manage("seed_catalog", "--products", str(PRODUCTS), "--skip-checks")

        timings: dict[str, list[dict]] = {system: [] for system in SYSTEMS}
        for number in range(ROUNDS):
            order = SYSTEMS if number % 2 == 0 else tuple(reversed(SYSTEMS))
            for system in order:
                print(f"round {number + 1}/{ROUNDS}: {system} timings", file=sys.stderr, flush=True)
                timings[system].append(run_child(system, "timings", number))

        stale: dict[str, dict] = {}
        delay_set = True
        set_replica_delay(REPLICA_DELAY)
        for system in SYSTEMS:
            print(f"stale reads: {system}", file=sys.stderr, flush=True)
            stale[system] = run_child(system, "stale")
        set_replica_delay("0")
        delay_set = False

        print_report(timings, stale)
    finally:
        try:
            if delay_set:
                set_replica_delay("0")
        finally:
            with contextlib.suppress(psycopg.Error):
                sql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            for client in redis_dbs():
                with contextlib.suppress(redis.RedisError):
                    client.flushdb()


# --------------------------------------------------------------------------- report


def us(ns: float) -> str:
    return f"{ns / 1000:,.0f}"


def pooled(rounds: list[dict], kind: str, case: str) -> list[int]:
    return [sample for one in rounds for sample in one["samples"][kind][case]]


def print_report(timings: dict[str, list[dict]], stale: dict[str, dict]) -> None:
    import cachalot
    import django

    postgres = sql("SHOW server_version")[0][0]
    redis_version = redis.Redis(host="127.0.0.1", port=REDIS_PORTS[1]).info("server")["redis_version"]
    print(f"## Query cache: Herd `cached_query` vs django-cachalot {cachalot.__version__}\n")
    print(
        f"Machine: {len(os.sched_getaffinity(0))} CPUs (`nproc`), Python {platform.python_version()},"
        f" Django {django.get_version()}, PostgreSQL {postgres}, Redis {redis_version}; {PRODUCTS} products;"
        f" {ROUNDS} rounds x {ITERATIONS} writes, alternating the systems.\n"
    )
    print("Median microseconds per read (all rounds pooled).\n")
    print("| query | system | hit | miss + fill | uncached | hit / uncached | miss / uncached | samples (hit/miss) |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    medians: dict[tuple[str, str, str], float] = {}
    for kind in KINDS:
        for system in SYSTEMS:
            rounds = timings[system]
            row = {case: statistics.median(pooled(rounds, kind, case)) for case in ("hit", "miss", "uncached")}
            for case, value in row.items():
                medians[(kind, system, case)] = value
            counts = f"{len(pooled(rounds, kind, 'hit'))}/{len(pooled(rounds, kind, 'miss'))}"
            print(
                f"| {kind} | {system} | {us(row['hit'])} | {us(row['miss'])} | {us(row['uncached'])}"
                f" | {row['hit'] / row['uncached']:.2f} | {row['miss'] / row['uncached']:.2f} | {counts} |"
            )
    print("\nHerd / cachalot, ratio of the medians (below 1: Herd faster); per round in brackets.\n")
    print("| query | hit | miss + fill | uncached (same query, no cache) |")
    print("|---|--:|--:|--:|")
    for kind in KINDS:
        cells = []
        for case in ("hit", "miss", "uncached"):
            ratio = medians[(kind, "herd", case)] / medians[(kind, "cachalot", case)]
            per_round = [
                statistics.median(h["samples"][kind][case]) / statistics.median(c["samples"][kind][case])
                for h, c in zip(timings["herd"], timings["cachalot"], strict=True)
            ]
            cells.append(f"{ratio:.2f} ({', '.join(f'{r:.2f}' for r in per_round)})")
        print(f"| {kind} | {' | '.join(cells)} |")
    writes = {system: statistics.median(w for one in timings[system] for w in one["writes"]) for system in SYSTEMS}
    print(
        "\nThe invalidating write (UPDATE one product in `atomic()`, commit, invalidation), median µs:"
        f" Herd {us(writes['herd'])}, cachalot {us(writes['cachalot'])}."
    )
    anomalies = {system: sum(one["anomalies"] for one in timings[system]) for system in SYSTEMS}
    print(
        f"Reads timed as hits that ran SQL, or misses that ran none (dropped): Herd {anomalies['herd']},"
        f" cachalot {anomalies['cachalot']}.\n"
    )

    print(f"## Stale reads: replica `recovery_min_apply_delay = '{REPLICA_DELAY}'`\n")
    print(
        f"{STALE_TRIES} tries each: warm a category list, rename a product in it on the primary (commit), read the"
        f" list at once and every {POLL_SECONDS * 1000:.0f} ms for {STALE_WINDOW:g} s.\n"
    )
    print(
        "| reads through | replica lagged | first read stale | tries with any stale read | stale reads / reads"
        " | still stale after the replica replayed | time to the fresh row (median / max) |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    rows = [
        ("Herd `cached_query`", stale["herd"]["tries"], "cached"),
        ("cachalot (router-routed queryset)", stale["cachalot"]["tries"], "cached"),
        ("no cache (router-routed queryset, Herd process)", stale["herd"]["tries"], "plain"),
    ]
    for label, tries, path in rows:
        print(f"| {label} | {stale_row(tries, path)} |")
    warm = {system: sum(t["warm"] for t in stale[system]["tries"]) for system in SYSTEMS}
    print(
        f"\nLists served from the cache (no SQL) just before the write: Herd {warm['herd']}/{STALE_TRIES},"
        f" cachalot {warm['cachalot']}/{STALE_TRIES}.\n"
    )


def stale_row(tries: list[dict], path: str) -> str:
    n = len(tries)
    lagged = sum(t["lagged"] for t in tries)
    first = sum(t[path]["first_stale"] for t in tries)
    any_stale = sum(t[path]["stale_reads"] > 0 for t in tries)
    stale_reads = sum(t[path]["stale_reads"] for t in tries)
    reads = sum(t[path]["reads"] for t in tries)
    after = sum(t[path]["stale_after_replay"] for t in tries)
    fresh = [t[path]["fresh_after"] for t in tries if t[path]["fresh_after"] is not None]
    never = n - len(fresh)
    if fresh:
        timing = f"{statistics.median(fresh) * 1000:,.0f} ms / {max(fresh) * 1000:,.0f} ms"
        if never:
            timing += f"; never within {STALE_WINDOW:g} s in {never}/{n}"
    else:
        timing = f"never within {STALE_WINDOW:g} s ({n}/{n})"
    return f"{lagged}/{n} | {first}/{n} | {any_stale}/{n} | {stale_reads}/{reads} | {after}/{n} | {timing}"


# --------------------------------------------------------------------------- child


class StatementCounter:
    """An execute wrapper on every alias: whether a read ran SQL (a miss) or not (a hit)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def names_of(rows: list[dict], product_id: int) -> str | None:
    return next((row["name"] for row in rows if row["id"] == product_id), None)


class Child:
    """One system in one subprocess: the same querysets, read through that system's cache."""

    def __init__(self, system: str) -> None:
        import django

        django.setup()

        from django.conf import settings
        from django.db import connections

        from catalog.models import Category, Product
        from scaling.db.replicas import PRIMARY

        self.system = system
        self.counter = StatementCounter()
        for alias in settings.DATABASES:
            connections[alias].execute_wrappers.append(self.counter)
        if system == "cachalot":
            from cachalot.api import invalidate

            # seed_catalog loaded rows with COPY, which cachalot cannot see: its documented
            # remedy for data changed outside Django is to invalidate everything.
            invalidate(cache_alias=settings.CACHALOT_CACHE)
        self.category_tables = (Category._meta.db_table,)
        self.slugs = [c.slug for c in Category.objects.using(PRIMARY).order_by("id")]
        self.some_slug = Product.objects.using(PRIMARY).order_by("id").values_list("slug", flat=True)[PRODUCTS // 2]

    # ------------------------------------------------------------------ the reads

    def cached(self, factory, extra: tuple[str, ...]) -> list:
        """Through the system's cache: ``cached_query`` for Herd, the queryset itself for cachalot."""
        if self.system == "cachalot":
            return list(factory())
        from scaling.cache.queries import cached_query

        return cached_query(factory(), extra_tables=extra)

    def uncached(self, factory) -> list:
        """The same queryset without any cache, routed by the router."""
        if self.system == "cachalot":
            from cachalot.api import cachalot_disabled

            with cachalot_disabled():
                return list(factory())
        return list(factory())

    # ------------------------------------------------------------------ the querysets

    def category_list(self, slug: str):
        """``catalog.selectors.product_list(category_slug=...)``'s query: newest 24, category joined."""
        from django.db.models import F, Subquery

        from catalog.models import Category, Product

        def factory():
            category_id = Category.objects.filter(slug=slug).order_by().values("id")[:1]
            return (
                Product.objects.filter(category_id=Subquery(category_id))
                .order_by("-id")
                .values(*CARD, category_name=F("category__name"), category_slug=F("category__slug"))[:24]
            )

        return factory

    @staticmethod
    def search():
        from django.db.models import F

        from catalog.models import Product

        return (
            Product.objects.filter(name__icontains=SEARCH)
            .order_by("-id")
            .values(*CARD, category_name=F("category__name"), category_slug=F("category__slug"))[:24]
        )

    def by_slug(self):
        from catalog.models import Product

        return Product.objects.select_related("category").filter(slug=self.some_slug)[:1]

    def queries(self) -> dict:
        return {
            "category list": (self.category_list(self.slugs[0]), self.category_tables),
            "search": (self.search, ()),
            "product by slug": (self.by_slug, self.category_tables),
        }

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def wait_for_replica(timeout: float = 15.0) -> None:
        from scaling.db import positions

        positions.wait_until_replayed(timeout)

    @staticmethod
    def rename(product_id: int, name: str) -> int:
        """One committed write, timed. A plain QuerySet: catalog's page flush (and the rebuild
        job it would enqueue on the shared test broker) stays out of it."""
        from django.db import transaction
        from django.db.models import QuerySet

        from catalog.models import Product
        from scaling.db.replicas import PRIMARY

        start = time.perf_counter_ns()
        with transaction.atomic(using=PRIMARY):
            QuerySet(Product).using(PRIMARY).filter(pk=product_id).update(name=name)
        return time.perf_counter_ns() - start

    def timed(self, call) -> tuple[int, int]:
        """Nanoseconds, and how many SQL statements the call ran."""
        self.counter.count = 0
        start = time.perf_counter_ns()
        call()
        return time.perf_counter_ns() - start, self.counter.count

    # ------------------------------------------------------------------ part 1

    def timings(self, round_number: int) -> dict:
        from catalog.models import Product
        from scaling.db.replicas import PRIMARY

        queries = self.queries()
        samples = {kind: {"hit": [], "miss": [], "uncached": []} for kind in KINDS}
        writes, anomalies = [], 0
        # The oldest products: outside every measured result, which stays the same.
        victims = Product.objects.using(PRIMARY).order_by("id").values_list("id", "name")[:ITERATIONS]
        for product_id, name in list(victims):
            writes.append(self.rename(product_id, f"{name} r{round_number}"))
            # Let the replica replay it: the next read is a plain miss, not the lag race.
            self.wait_for_replica()
            for kind, (factory, extra) in queries.items():
                elapsed, statements = self.timed(lambda f=factory, e=extra: self.cached(f, e))
                if statements:
                    samples[kind]["miss"].append(elapsed)
                else:
                    anomalies += 1
                for _ in range(HITS_PER_ITERATION):
                    elapsed, statements = self.timed(lambda f=factory, e=extra: self.cached(f, e))
                    if statements:
                        anomalies += 1
                    else:
                        samples[kind]["hit"].append(elapsed)
                elapsed, _ = self.timed(lambda f=factory: self.uncached(f))
                samples[kind]["uncached"].append(elapsed)
        return {"samples": samples, "writes": writes, "anomalies": anomalies}

    # ------------------------------------------------------------------ part 2

    def stale(self) -> dict:
        marker = secrets.token_hex(3)
        tries = []
        # One list per try, none of them read in part 1 (which used the first category).
        for number, slug in enumerate(self.slugs[1 : STALE_TRIES + 1]):
            factory = self.category_list(slug)
            self.wait_for_replica(timeout=30)
            self.cached(factory, self.category_tables)
            _, statements = self.timed(lambda f=factory: self.cached(f, self.category_tables))
            rows = self.cached(factory, self.category_tables)
            product_id = rows[3]["id"]
            new_name = f"{rows[3]['name']} qc-{self.system}-{marker}-{number}"
            self.rename(product_id, new_name)
            committed = time.monotonic()

            paths = {"cached": lambda f=factory: self.cached(f, self.category_tables)}
            if self.system == "herd":
                paths["plain"] = lambda f=factory: self.uncached(f)
            seen = {path: {"reads": 0, "stale_reads": 0, "first_stale": False, "fresh_after": None} for path in paths}
            lagged = None
            while time.monotonic() - committed <= STALE_WINDOW:
                for path, read in paths.items():
                    fresh = names_of(read(), product_id) == new_name
                    state = seen[path]
                    if state["reads"] == 0:
                        state["first_stale"] = not fresh
                    state["reads"] += 1
                    if not fresh:
                        state["stale_reads"] += 1
                    elif state["fresh_after"] is None:
                        state["fresh_after"] = time.monotonic() - committed
                if lagged is None:
                    # Was the replica behind when the first reads ran? Else the try shows nothing.
                    lagged = replica_name(product_id) != new_name
                time.sleep(POLL_SECONDS)
            replayed = replica_name(product_id) == new_name
            for path, read in paths.items():
                seen[path]["stale_after_replay"] = replayed and names_of(read(), product_id) != new_name
            tries.append({"warm": statements == 0, "lagged": bool(lagged), "replica_replayed": replayed, **seen})
        return {"tries": tries}


def replica_name(product_id: int) -> str:
    """The product's name as the replica has it now (a connection of its own, no cache)."""
    with psycopg.connect(host="127.0.0.1", port=PG_REPLICA, user="herd", dbname=DATABASE) as conn:
        return conn.execute("SELECT name FROM catalog_product WHERE id = %s", [product_id]).fetchone()[0]


def child(system: str, mode: str, out: Path, round_number: int) -> None:
    runner = Child(system)
    result = runner.timings(round_number) if mode == "timings" else runner.stale()
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=4, metavar=("SYSTEM", "MODE", "OUT", "ROUND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        system, mode, out, round_number = args.child
        child(system, mode, Path(out), int(round_number))
    else:
        main()
