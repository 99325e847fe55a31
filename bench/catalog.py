"""The catalog on the bench herd, through HAProxy, under Herd's configuration and the
conventional single-server Django's: the minimal view, the warm product page (edge cache,
app, uncached), a logged-in shopper's product page and product list beside the same page
with a cookie but no session (each with the statements and Redis commands a request asks
for), a browse-heavy mix with replica offload and cache hit ratios, keyset pagination.
``measure()`` returns the figures, ``render(part)`` writes its section of docs/PERFORMANCE.md (where the method is
described).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import matplotlib.pyplot as plt
import psycopg

from bench import probes
from bench.rendering import CONVENTIONAL_COLOR, HERD_COLOR, Figures, Part, chart, failed, runs_table
from bench.wrk import NO_EDGE_CACHE, Run, median_run, wrk
from deploy.herd.app import Web
from deploy.herd.control import Herd
from deploy.herd.processes import HerdError, run
from deploy.herd.profiles import PROFILES, VENV_PYTHON, shard_names
from deploy.herd.services import Postgres

ROOT = Path(__file__).resolve().parent.parent

PRODUCTS = int(os.environ.get("BENCH_PRODUCTS", "1000000"))
REPLICAS = int(os.environ.get("BENCH_REPLICAS", "2"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DURATION = os.environ.get("BENCH_DURATION", "8s")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
DEEP_PAGE = int(os.environ.get("BENCH_DEEP_PAGE", "10000"))
USERS = int(os.environ.get("BENCH_USERS", "64"))
PAGE_SIZE = 24
PASSWORD = "bench-password-1234"

PROFILE = PROFILES[os.environ.get("BENCH_PROFILE", "bench")]  # "test" (HERD_TEST_SLOT=N): a trial run
PG = PROFILE.port(55432)
URL = PROFILE.url.rstrip("/")

# The two configurations of the same processes: environment only.
HERD = {"HERD_CACHES_ENABLED": "true", "HERD_SESSION_ENGINE": "redis", "DJANGO_LOG_LEVEL": "WARNING"}
CONVENTIONAL = {
    "HERD_CACHES_ENABLED": "false",
    "HERD_SESSION_ENGINE": "database",
    "DATABASE_REPLICA_URLS": "",
    "DJANGO_LOG_LEVEL": "WARNING",
}
CACHES_OFF = {**HERD, "HERD_CACHES_ENABLED": "false"}

# Random paths from a file; 1 in 5 by a logged-in shopper, 1 in 50 of those a review
# post. Every request carries wrk's -H headers (Cache-Control: no-cache, when given).
MIX_SCRIPT = """
local paths, cookies, csrf = {}, {}, {}
local n = 0
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  if args[2] then
    for line in io.lines(args[2]) do
      local session, token = line:match("([^ ]+) ([^ ]+)")
      cookies[#cookies + 1] = session
      csrf[#csrf + 1] = token
    end
  end
end
request = function()
  n = n + 1
  local path = paths[math.random(#paths)]
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  if n % 5 == 0 and #cookies > 0 then
    local i = math.random(#cookies)
    headers["Cookie"] = "sessionid=" .. cookies[i] .. "; csrftoken=" .. csrf[i]
    if n % 50 == 0 and path:match("^/p/") then
      headers["Content-Type"] = "application/x-www-form-urlencoded"
      local body = "csrfmiddlewaretoken=" .. csrf[i] .. "&rating=" .. math.random(5) .. "&text=bench"
      return wrk.format("POST", path .. "review/", headers, body)
    end
  end
  return wrk.format("GET", path, headers)
end
"""


def sql(query: str, port: int = PG, database: str = "herd") -> list[tuple]:
    with psycopg.connect(host="127.0.0.1", port=port, user="herd", dbname=database, autocommit=True) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def manage(*args: str, database: str = "herd") -> None:
    env = {"PATH": os.environ.get("PATH", ""), **PROFILE.django_env(database)}
    run([str(VENV_PYTHON), "manage.py", *args], env=env, log=PROFILE.logs / "bench-setup.log", cwd=ROOT)


def prepare(products: int = PRODUCTS, database: str = "herd") -> Herd:
    """The bench herd's services up, ``database`` migrated and holding at least ``products``."""
    herd = Herd(PROFILE, replicas=REPLICAS, database=database)
    herd.start_services()
    load_products(products, database)
    sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return herd


def load_products(products: int, database: str) -> None:
    primary = Postgres(PROFILE, replica=False)
    for name in (database, *shard_names(database)):  # its jobs and notifications live on shards
        primary.create_database(name)
    manage("migrate", "--noinput", database=database)
    manage("collectstatic", "--noinput", database=database)
    have = sql("SELECT count(*) FROM catalog_product", database=database)[0][0]
    if have < products:
        print(f"loading {products - have:,} products into {database} (once; kept in .herd/bench)...", flush=True)
        manage("seed_catalog", "--products", str(products - have), database=database)
    # A replica that has not replayed the load would serve empty pages.
    deadline = time.monotonic() + 600
    while sql("SELECT count(*) FROM catalog_product", PG + 1, database)[0][0] < products:
        if time.monotonic() > deadline:
            raise HerdError(f"the replica did not replay the products of {database} in 10 minutes")
        time.sleep(1)


def configure(herd: Herd, env: dict[str, str], replicas: int | None = None, webs: list[Web] | None = None) -> None:
    """(Re)start every app replica of ``herd`` with ``env``, ``replicas`` of them (or ``webs``:
    processes in their place, as bench/baseline.py's gunicorn), behind HAProxy."""
    herd.extra_env = env
    if replicas is not None:
        herd.replica_count = replicas
    herd.drain(herd.stray_webs_beyond(0), None)
    webs = webs or herd.webs()
    herd.collect_static()
    for web in webs:
        web.launch()
    for web in webs:
        web.wait_ready()
    herd.haproxy().ensure()
    # Measure only once HAProxy sends traffic to exactly these replicas.
    wanted = {web.name for web in webs}
    deadline = time.monotonic() + 30
    while (states := herd.haproxy().server_states()).keys() != wanted or set(states.values()) != {"UP"}:
        if time.monotonic() > deadline:
            raise HerdError(f"HAProxy did not see the replicas up: {states}")
        time.sleep(0.2)


def restart_replicas(herd: Herd, caches: bool) -> None:
    configure(herd, HERD if caches else CACHES_OFF)


def log_in_users(count: int, prefix: str = "bench") -> list[tuple[str, str]]:
    """Session and CSRF cookies of ``count`` users (``prefix`` + number) logged in through
    the load balancer (in whichever session store the running replicas use)."""
    usernames = [f"{prefix}{number}" for number in range(count)]
    manage("shell", "-c", _create_users(usernames))

    def log_in(username: str) -> tuple[str, str]:
        with httpx.Client(base_url=PROFILE.url, timeout=30) as client:
            page = client.get("/accounts/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            client.post(
                "/accounts/login/", data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token}
            )
            return client.cookies["sessionid"], client.cookies["csrftoken"]

    # Password hashing is slow on purpose: a few at a time, over the replicas.
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(log_in, usernames))


def _create_users(usernames: list[str]) -> str:
    return (
        "from accounts.models import User; from accounts import services\n"
        f"for name in {usernames!r}:\n"
        "    User.objects.filter(username=name).exists() or "
        f"services.create_user(username=name, email=name + '@example.com', password={PASSWORD!r})"
    )


# Product popularity follows Zipf's law, as in real catalogs: the product of rank r is
# viewed in proportion to 1/r (here the top 1,000 of 5,000 take two thirds of the views).
ZIPF_TOP = 1000
SEARCH_WORDS = ["a", "pro", "max", "mini", "eco"]


def mix_paths(slugs: list[str], categories: list[str], uniform: bool = False) -> list[str]:
    """The mix's paths, drawn uniformly by wrk: about 85% product pages (Zipf, or with
    ``uniform`` as many product pages with every product equally likely), the rest
    category, list and search pages."""
    paths = [f"/p/{slug}/" for rank, slug in enumerate(slugs, 1) for _ in range(max(1, round(ZIPF_TOP / rank)))]
    if uniform:
        paths = [f"/p/{slugs[number % len(slugs)]}/" for number in range(len(paths))]
    paths += [f"/c/{slug}/" for slug in categories] * 40
    paths += ["/products/", "/"] * 400
    paths += [f"/products/?q={word}" for word in SEARCH_WORDS] * 40
    return paths


def sample_slugs(count: int = 5000, database: str = "herd") -> list[str]:
    """Product slugs spread over the table (a browse over many products)."""
    rows = sql(f"SELECT slug FROM catalog_product TABLESAMPLE SYSTEM (1) LIMIT {count}", database=database)
    if len(rows) < min(count, 100):
        rows = sql(f"SELECT slug FROM catalog_product ORDER BY random() LIMIT {count}", database=database)
    return [row[0] for row in rows]


@contextlib.contextmanager
def path_script(paths: list[str], sessions: list[tuple[str, str]] | None = None) -> Iterator[tuple[Path, tuple]]:
    """The mix's Lua script and its arguments (paths file, cookies file), in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        paths_file, cookies_file, script = (Path(folder) / n for n in ("paths", "cookies", "mix.lua"))
        paths_file.write_text("\n".join(paths) + "\n")
        script.write_text(MIX_SCRIPT)
        args: tuple[str, ...] = (str(paths_file),)
        if sessions:
            cookies_file.write_text("\n".join(f"{s} {c}" for s, c in sessions) + "\n")
            args += (str(cookies_file),)
        yield script, args


def run_paths(
    paths: list[str],
    sessions: list[tuple[str, str]] | None = None,
    headers: tuple[str, ...] = (),
    connections: int = CONNECTIONS,
    duration: str = DURATION,
) -> Run:
    with path_script(paths, sessions) as (script, args):
        return wrk(URL, duration, connections, script, args, headers)


def deep_cursor_url(depth: int) -> str:
    """The URL of list page ``depth`` (newest first), as the Next links would lead to it."""
    rows = sql(f"SELECT id FROM catalog_product ORDER BY id DESC OFFSET {(depth - 1) * PAGE_SIZE - 1} LIMIT 1")
    env = {"PATH": os.environ.get("PATH", ""), **PROFILE.django_env()}
    code = f"from catalog.selectors import encode_cursor; print(encode_cursor('newest', [{rows[0][0]}]))"
    out = subprocess.run(
        [str(VENV_PYTHON), "manage.py", "shell", "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    return f"/products/?after={out}"


# What is not a read the router could place: connection checks (``SELECT 1``, normalized
# to ``SELECT $1``) and set-up (``set_config``), health and WAL-position checks, locking
# reads (``FOR UPDATE``) and PostgreSQL's own foreign-key checks (``FOR KEY SHARE``),
# which belong to writes, and this benchmark's own queries.
_APP_SELECTS = (
    "query ILIKE 'SELECT%' AND NOT ("
    "query ~* '^SELECT \\$1$' OR query ILIKE 'SELECT 1%' OR query ILIKE '%set_config%'"
    " OR query ILIKE '%pg_%lsn%' OR query ILIKE '%pg_is_in_recovery%'"
    " OR query ILIKE '%FOR UPDATE%' OR query ILIKE '%FOR KEY SHARE%' OR query ILIKE '%pg_stat_statements%')"
)


def replica_share() -> tuple[int, int]:
    """The app's plain SELECTs (``_APP_SELECTS``) on the primary and on the replica."""
    counts = []
    for port in (PG, PG + 1):
        rows = sql(f"SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements WHERE {_APP_SELECTS}", port)
        counts.append(int(rows[0][0]))
    return counts[0], counts[1]


def primary_selects(limit: int = 5) -> list[tuple[int, str]]:
    """The app's SELECTs that still ran on the primary, most called first: where the
    replica share is lost."""
    rows = sql(
        f"SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 140) FROM pg_stat_statements"
        f" WHERE {_APP_SELECTS} ORDER BY calls DESC LIMIT {limit}"
    )
    return [(int(calls), query) for calls, query in rows]


def reset_statements() -> None:
    for port in (PG, PG + 1):
        sql("SELECT pg_stat_statements_reset()", port)


@dataclass
class MixResult:
    """The browse-heavy mix under one configuration, one round."""

    run: Run
    replica_share: float | None = None
    cache_lookups: dict[str, tuple[float, int]] | None = None
    primary_selects: list[tuple[int, str]] = field(default_factory=list)
    # view -> (requests, seconds in Django) during the round, over every replica.
    views: dict[str, tuple[float, float]] = field(default_factory=dict)


def measure_mix(herd: Herd, paths: list[str], sessions: list[tuple[str, str]], conventional: bool) -> MixResult:
    reset_statements()
    before, timed = probes.cache_lookups(herd), probes.view_time(herd)
    result = run_paths(paths, sessions, NO_EDGE_CACHE if conventional else ())
    after, views = probes.cache_lookups(herd), probes.view_delta(timed, probes.view_time(herd))
    on_primary, on_replica = replica_share()
    share = None if conventional else on_replica / max(on_primary + on_replica, 1)
    if conventional:
        return MixResult(result)
    return MixResult(result, share, probes.hit_ratios(before, after), primary_selects(), views)


@dataclass
class CatalogFigures:
    products: int
    replicas: int
    pages: dict[str, Run]
    mixes: dict[str, Run]
    replica_share: float | None
    # cache -> (hit ratio, lookups in the round), median ratio over the rounds.
    cache_hits: dict[str, tuple[float, int]] | None
    # The app's SELECTs left on the primary in the last Herd round: (calls, query).
    primary_selects: list[tuple[int, str]]
    keyset: dict[str, Run]
    deep_page: int
    settings: dict[str, str] = field(default_factory=dict)
    # The mix's shoppers logged in under Herd's configuration (sessions in Redis), for reuse.
    sessions: list[tuple[str, str]] = field(default_factory=list, repr=False)
    # page -> {server: {statement's kind or Redis command: per request}}, median over
    # the rounds (bench/probes.py's ``round_trips``); none in figures from before they were.
    round_trips: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # The Herd mix's view -> (requests, seconds in Django) in a round, median over the
    # rounds; none in figures from before they were measured.
    mix_views: dict[str, tuple[float, float]] = field(default_factory=dict)


def _median_views(rounds: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    views = {view for r in rounds for view in r}
    medians = {
        view: tuple(statistics.median(r.get(view, (0.0, 0.0))[i] for r in rounds) for i in (0, 1)) for view in views
    }
    return dict(sorted(medians.items(), key=lambda item: -item[1][1]))


def _median_hits(rounds: list[dict[str, tuple[float, int]] | None]) -> dict[str, tuple[float, int]] | None:
    present = [r for r in rounds if r is not None]
    if not present:
        return None
    caches = sorted({cache for r in present for cache in r})
    return {
        cache: (
            statistics.median(r[cache][0] for r in present if cache in r),
            round(statistics.median(r[cache][1] for r in present if cache in r)),
        )
        for cache in caches
    }


LOGGED_IN_TARGET = 0.5  # of the minimal view's requests/s
MINIMAL_VIEW = "minimal view (app)"
WARM_PAGE = "warm product page (app)"
NO_SESSION_PAGE = "product page, cookie without a session (app)"
LOGGED_IN_PAGE = "product page, logged in (app)"
LOGGED_IN_LIST = "product list, logged in (app)"
# The pages whose statements and Redis commands per request are counted.
COUNTED = (NO_SESSION_PAGE, LOGGED_IN_PAGE, LOGGED_IN_LIST)


def logged_in_ratios(pages: dict[str, Run]) -> dict[str, float]:
    """Each logged-in page's requests/s, and the cookie-without-a-session page's, over the
    minimal view's, measured in the same run (none in figures from before they were measured)."""
    ceiling = pages[MINIMAL_VIEW]
    return {
        f"{name} / minimal view": pages[name].rps / ceiling.rps
        for name in (NO_SESSION_PAGE, LOGGED_IN_PAGE, LOGGED_IN_LIST)
        if name in pages
    }


SHOWN_TRIPS = 0.05  # fewer per request than this is background (health checks), not the page


def trips_cell(calls: dict[str, float]) -> str:
    """One server's work per request: the total, then each kind, most first."""
    shown = sorted(((n, what) for what, n in calls.items() if n >= SHOWN_TRIPS), reverse=True)
    if not shown:
        return "0"
    return f"{sum(n for n, _ in shown):.1f} ({', '.join(f'{what} {n:.1f}' for n, what in shown)})"


def trip_totals(trips: dict[str, dict[str, float]]) -> dict[str, float]:
    """Statements (all PostgreSQL servers) and Redis commands (all Redis) per request."""
    totals = {"SQL statements": 0.0, "Redis commands": 0.0}
    for server, calls in trips.items():
        kind = "SQL statements" if server.startswith("PostgreSQL") else "Redis commands"
        totals[kind] += sum(n for n in calls.values() if n >= SHOWN_TRIPS)
    return totals


def cost_breakdown(figures: CatalogFigures) -> list[str]:
    """Where the logged-in product page's time goes, from this run's rows: its milliseconds
    per request against the minimal view's, the same page's with a cookie but no session and
    the warm anonymous page's; by how much it misses its target; what each request asked of
    each server. Empty for figures from before the cookie-without-a-session row."""
    pages = figures.pages
    if not {MINIMAL_VIEW, WARM_PAGE, NO_SESSION_PAGE, LOGGED_IN_PAGE} <= pages.keys():
        return []
    minimal, warm, bare, logged = (
        1000 / pages[n].rps for n in (MINIMAL_VIEW, WARM_PAGE, NO_SESSION_PAGE, LOGGED_IN_PAGE)
    )
    allowed = minimal / LOGGED_IN_TARGET
    lines = [
        "### Where the logged-in product page's time goes",
        "",
        "Milliseconds of the whole machine per request (1000 / req/s of the rows above, same run). "
        "The minimal view runs the whole middleware stack; the warm anonymous page is answered "
        "before the session middleware; with a cookie but no session the product page runs the "
        "whole stack and the view, with no per-user read; logged in, it reads the session, the "
        "user and their own bits too.",
        "",
        "| page | ms per request | over the minimal view |",
        "|---|---:|---:|",
        f"| {MINIMAL_VIEW} | {minimal:.2f} | |",
        *(
            f"| {name} | {ms:.2f} | +{ms - minimal:.2f} |"
            for name, ms in ((WARM_PAGE + ", anonymous", warm), (NO_SESSION_PAGE, bare), (LOGGED_IN_PAGE, logged))
        ),
        "",
    ]
    if logged <= allowed:
        lines.append(
            f"- Target met: {logged:.2f} ms per request, within the {allowed:.2f} ms that "
            f"{LOGGED_IN_TARGET}x the minimal view allows."
        )
    else:
        lines.append(
            f"- Target missed by **{logged - allowed:.2f} ms** per request: {LOGGED_IN_TARGET}x the minimal "
            f"view allows {allowed:.2f} ms, the page takes {logged:.2f} ms ({logged / allowed:.1f} times as long)."
        )
    lines.append(
        f"- Of its {logged - minimal:.2f} ms over the minimal view, **{bare - minimal:.2f} ms** is the "
        f"page itself through the whole stack with no per-user read, and **{logged - bare:.2f} ms** the "
        "shopper's own work (logged in / cookie without a session)."
    )
    trips = {name: figures.round_trips[name] for name in COUNTED if name in figures.round_trips}
    if trips:
        servers = sorted({server for per_page in trips.values() for server in per_page})
        lines += [
            "",
            "Each server's work per request during those runs (pg_stat_statements by kind: Django's "
            "connection check, `SELECT 1` on each pooled connection's first use in a request; a WAL-position "
            f"check; else the statement's first word. Redis `INFO commandstats` by command; under {SHOWN_TRIPS} "
            "per request left out):",
            "",
            f"| server | {' | '.join(trips)} |",
            f"|---|{'---:|' * len(trips)}",
            *(
                f"| {server} | {' | '.join(trips_cell(per_page.get(server, {})) for per_page in trips.values())} |"
                for server in servers
            ),
        ]
    return [*lines, ""]


MIX_TARGET = 0.5  # of the minimal view's requests/s
EARLY = "unresolved"  # the metrics' view for requests answered before URL resolution


def mix_breakdown(figures: CatalogFigures) -> list[str]:
    """Where the Herd mix's time goes, from this run: its milliseconds per request against
    the minimal view's and the target's, and each view's share of the requests and of the
    replicas' time (their request timers). Empty for figures from before they were kept."""
    views = figures.mix_views
    if not views:
        return []
    mix, minimal = figures.mixes["Herd"], figures.pages[MINIMAL_VIEW]
    ms, allowed = 1000 / mix.rps, 1000 / minimal.rps / MIX_TARGET
    verdict = f"met, {allowed - ms:.2f} ms to spare" if ms <= allowed else f"missed by **{ms - allowed:.2f} ms**"
    seen = sum(count for count, _ in views.values())
    sent = max(mix.requests, seen)  # a median round's requests, as the views'
    spent = sum(seconds for _, seconds in views.values()) or 1.0
    lines = [
        "### Where the mix's time goes (Herd)",
        "",
        f"The whole mix costs **{ms:.2f} ms** of the machine per request (1000 / req/s, same run), "
        f"the minimal view {1000 / minimal.rps:.2f} ms; the target (≥ {MIX_TARGET}x the minimal view's req/s) "
        f"allows {allowed:.2f} ms: {verdict}.",
        "",
        "The mix's requests by the view that answered them, from the replicas' own request timers "
        "(`herd_http_request_duration_seconds`, count and sum, scraped around each round; median round). "
        "What wrk sent and no replica saw, HAProxy's edge cache answered. Time in Django is wall time, "
        f"waits included; `{EARLY}` is a warm anonymous page answered before URL resolution "
        "(scaling/web/edge.py).",
        "",
        "| answered by | requests in a round | of the mix | ms in Django each | of the replicas' time |",
        "|---|---:|---:|---:|---:|",
        f"| HAProxy's edge cache | {sent - seen:,.0f} | {(sent - seen) / sent:.0%} | | |",
    ]
    for view, (count, seconds) in views.items():
        lines.append(
            f"| {view} | {count:,.0f} | {count / sent:.0%} | {1000 * seconds / count:.2f} | {seconds / spent:.0%} |"
        )
    return [*lines, ""]


def counted_wrk(herd: Herd, url: str, headers: tuple[str, ...]) -> tuple[Run, dict[str, dict[str, float]]]:
    """wrk on ``url``, and what each server did per request meanwhile (bench/probes.py)."""
    before = probes.round_trips(herd)
    result = wrk(url, DURATION, CONNECTIONS, headers=headers)
    return result, probes.per_request(before, probes.round_trips(herd), result.requests)


def _median_trips(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    servers = sorted({server for r in rounds for server in r})
    return {
        server: {
            what: statistics.median(r.get(server, {}).get(what, 0.0) for r in rounds)
            for what in sorted({what for r in rounds for what in r.get(server, {})})
        }
        for server in servers
    }


def measure(herd: Herd | None = None, rounds: int = ROUNDS, users: int = USERS) -> CatalogFigures:
    """Pages, the mix under both configurations, keyset pagination: medians over ``rounds``."""
    herd = herd or prepare()
    slugs = sample_slugs()
    categories = [row[0] for row in sql("SELECT slug FROM catalog_category")]
    hot = slugs[0]
    paths = mix_paths(slugs, categories)
    pages: dict[str, list[Run]] = {
        "minimal view (app)": [],
        "warm product page, edge cache": [],
        "warm product page (app)": [],
        NO_SESSION_PAGE: [],
        LOGGED_IN_PAGE: [],
        LOGGED_IN_LIST: [],
        "product page, conventional (no caches)": [],
    }
    trips: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in COUNTED}
    mixes: dict[str, list[MixResult]] = {"Herd": [], "conventional": []}
    sessions: dict[str, list[tuple[str, str]]] = {}
    for _ in range(rounds):
        configure(herd, HERD)
        sessions.setdefault("Herd", log_in_users(users))
        httpx.get(f"{URL}/p/{hot}/")
        pages["minimal view (app)"].append(wrk(f"{URL}/robots.txt", DURATION, CONNECTIONS, headers=NO_EDGE_CACHE))
        pages["warm product page, edge cache"].append(wrk(f"{URL}/p/{hot}/", DURATION, CONNECTIONS))
        pages["warm product page (app)"].append(wrk(f"{URL}/p/{hot}/", DURATION, CONNECTIONS, headers=NO_EDGE_CACHE))
        # One shopper's session on every connection: the per-user work of each request, none
        # shared. Beside it, the same page with only the CSRF cookie: the whole middleware
        # stack and the view, but no session to read, so no per-user reads.
        session, token = sessions["Herd"][0]
        cookie = f"Cookie: sessionid={session}; csrftoken={token}"
        for name, path, sent in (
            (NO_SESSION_PAGE, f"/p/{hot}/", f"Cookie: csrftoken={token}"),
            (LOGGED_IN_PAGE, f"/p/{hot}/", cookie),
            (LOGGED_IN_LIST, "/products/", cookie),
        ):
            httpx.get(f"{URL}{path}", headers={"Cookie": sent.removeprefix("Cookie: ")})
            result, per_request = counted_wrk(herd, f"{URL}{path}", (*NO_EDGE_CACHE, sent))
            pages[name].append(result)
            trips[name].append(per_request)
        mixes["Herd"].append(measure_mix(herd, paths, sessions["Herd"], conventional=False))
        configure(herd, CONVENTIONAL)
        # Sessions live in another store here: the same users log in again.
        sessions.setdefault("conventional", log_in_users(users))
        pages["product page, conventional (no caches)"].append(
            wrk(f"{URL}/p/{hot}/", DURATION, CONNECTIONS, headers=NO_EDGE_CACHE)
        )
        mixes["conventional"].append(measure_mix(herd, paths, sessions["conventional"], conventional=True))
    configure(herd, HERD)

    products = sql("SELECT count(*) FROM catalog_product")[0][0]
    deep_page = max(2, min(DEEP_PAGE, products // PAGE_SIZE - 1))
    deep = deep_cursor_url(deep_page)
    keyset: dict[str, list[Run]] = {"list page 1": [], f"list page {deep_page:,}": []}
    for _ in range(rounds):
        keyset["list page 1"].append(wrk(f"{URL}/products/", DURATION, 4, headers=NO_EDGE_CACHE))
        keyset[f"list page {deep_page:,}"].append(wrk(f"{URL}{deep}", DURATION, 4, headers=NO_EDGE_CACHE))

    shares = [m.replica_share for m in mixes["Herd"] if m.replica_share is not None]
    return CatalogFigures(
        products=products,
        replicas=herd.replica_count,
        pages={name: median_run(runs) for name, runs in pages.items()},
        mixes={name: median_run([m.run for m in runs]) for name, runs in mixes.items()},
        replica_share=statistics.median(shares) if shares else None,
        cache_hits=_median_hits([m.cache_lookups for m in mixes["Herd"]]),
        primary_selects=mixes["Herd"][-1].primary_selects if mixes["Herd"] else [],
        keyset={name: median_run(runs) for name, runs in keyset.items()},
        deep_page=deep_page,
        settings={"rounds": str(rounds), "duration": DURATION, "connections": str(CONNECTIONS), "users": str(users)},
        sessions=sessions["Herd"],
        round_trips={name: _median_trips(rounds) for name, rounds in trips.items() if rounds},
        mix_views=_median_views([m.views for m in mixes["Herd"] if m.views]),
    )


def table(title: str, rows: list[tuple[str, Run]], extra: list[str]) -> None:
    print(f"\n### {title}\n")
    print("| case | req/s | p50 ms | p99 ms | failed |")
    print("|---|---:|---:|---:|---:|")
    for name, result in rows:
        print(f"| {name} | {result.rps:.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f} | {result.errors} |")
    for line in extra:
        print(line)


def render(part: Part) -> list[str]:
    """This part's section of the report (bench/report.py): its tables and charts, or why it failed."""
    lines = ["### Herd against the conventional single-server Django (bench/catalog.py)", ""]
    if not part.ok:
        return lines + failed(part)
    figures: CatalogFigures = part.value
    herd, conventional = figures.mixes["Herd"], figures.mixes["conventional"]
    lines += [
        "The same app replicas, HAProxy and services, configured through the environment only. "
        "**Herd**: reads on the streaming replica, query and object caches, sessions in Redis, "
        "HAProxy's edge cache. **Conventional**: one database (`DATABASE_REPLICA_URLS` empty), "
        "no caches (`HERD_CACHES_ENABLED=false`), sessions in the database "
        "(`HERD_SESSION_ENGINE=database`), every request past the edge cache. The browse-heavy mix: "
        f"product pages with Zipf popularity over 5,000 products (rank r viewed in proportion to 1/r), "
        f"category and list pages, searches; 1 in 5 requests by one of "
        f"{figures.settings['users']} logged-in shoppers (logged in again under each configuration), "
        "1 in 50 of those a review post.",
        "",
        *runs_table([("mix, Herd", herd), ("mix, conventional", conventional)]),
        "",
        f"- Herd / conventional: **{herd.rps / conventional.rps:.2f}x** the requests/s; "
        f"p50 **{herd.p50_ms / conventional.p50_ms:.2f}x**, p99 **{herd.p99_ms / conventional.p99_ms:.2f}x**",
        "",
    ]

    def draw() -> None:
        _fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        left.bar(["Herd", "conventional"], [herd.rps, conventional.rps], color=[HERD_COLOR, CONVENTIONAL_COLOR])
        left.set_title("browse-heavy mix: requests/s")
        xs = range(2)
        right.bar([x - 0.2 for x in xs], [herd.p50_ms, herd.p99_ms], 0.4, label="Herd", color=HERD_COLOR)
        right.bar(
            [x + 0.2 for x in xs],
            [conventional.p50_ms, conventional.p99_ms],
            0.4,
            label="conventional",
            color=CONVENTIONAL_COLOR,
        )
        right.set_xticks(list(xs), ["p50", "p99"])
        right.set_title("latency, ms")
        right.legend()

    lines += [chart("herd-vs-conventional.png", draw), ""]

    pages = figures.pages
    ceiling, cold = pages["minimal view (app)"], pages["product page, conventional (no caches)"]
    edge, warm = pages["warm product page, edge cache"], pages["warm product page (app)"]
    lines += [
        "### The ceiling: a minimal view, and the warm product page against it",
        "",
        "`/robots.txt` through the whole middleware stack is the most the stack serves; the warm "
        "product page (anonymous) is measured as deployed (from HAProxy's edge cache) and from the "
        "app (`Cache-Control: no-cache` sends it past the edge, to the object cache). The logged-in "
        "product page and product list are one shopper's session on every connection: no edge cache, "
        "shared fragments and the shopper's own bits (docs/CACHING.md).",
        "",
        *runs_table(list(pages.items())),
        "",
        f"- warm product page from the app / minimal view: **{warm.rps / ceiling.rps:.2f}** of the ceiling; "
        f"/ no caches: **{warm.rps / cold.rps:.2f}x**",
        f"- warm product page from the edge cache / minimal view: **{edge.rps / ceiling.rps:.2f}**; "
        f"/ no caches: **{edge.rps / cold.rps:.2f}x**",
        *(f"- {name}: **{ratio:.2f}**" for name, ratio in logged_in_ratios(pages).items()),
        "",
    ]

    def draw_pages() -> None:
        plt.figure(figsize=(8, 2.8))
        names = list(pages)
        plt.barh(names[::-1], [pages[n].rps for n in names][::-1], color=HERD_COLOR)
        plt.xlabel("requests/s")
        plt.title("pages through HAProxy")

    lines += [chart("pages.png", draw_pages), ""]

    share = "n/a" if figures.replica_share is None else f"{figures.replica_share:.1%}"
    lines += [
        "### Replica offload and cache hit ratios during the mix (Herd)",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| SELECTs that ran on the replica (pg_stat_statements; health, LSN and FOR UPDATE reads left out) "
        f"| {share} |",
    ]
    if figures.cache_hits is None:
        lines.append("| cache hit ratio (`herd_cache_lookups_total` on each replica's /metrics) | n/a |")
    else:
        for cache, (ratio, lookups) in figures.cache_hits.items():
            lines.append(f"| cache hit ratio, {cache} ({lookups:,} lookups in a round) | {ratio:.1%} |")
    lines.append("")
    if figures.primary_selects:
        lines += ["The app's SELECTs still on the primary, most called (last round):", ""]
        lines += [f"- {calls:,} calls: `{query}`" for calls, query in figures.primary_selects]
        lines.append("")

    first, deep = figures.keyset.values()
    targets = [
        ("warm product page (app) ≥ 80% of the minimal view's req/s", warm.rps / ceiling.rps, 0.8, "{:.0%}"),
        ("warm product page (app) ≥ 5x the uncached page", warm.rps / cold.rps, 5.0, "{:.2f}x"),
        ("≥ 95% of SELECTs on the replica in the mix", figures.replica_share, 0.95, "{:.1%}"),
        ("the whole mix ≥ 0.5x the minimal view's req/s", figures.mixes["Herd"].rps / ceiling.rps, 0.5, "{:.2f}x"),
        (
            "logged-in product page ≥ 0.5x the minimal view",
            logged_in_ratios(pages).get(f"{LOGGED_IN_PAGE} / minimal view"),
            LOGGED_IN_TARGET,
            "{:.2f}x",
        ),
    ]
    lines += [
        "### Keyset pagination at depth (wrk -c4, from the app)",
        "",
        *runs_table(list(figures.keyset.items())),
        "",
        f"- p50 at page {figures.deep_page:,} / p50 at page 1: **{deep.p50_ms / first.p50_ms:.2f}**",
        "",
        "### Targets from the catalog issue",
        "",
        "| target | measured | met |",
        "|---|---:|---|",
    ]
    for name, value, goal, shown in targets:
        met = "n/a" if value is None else ("yes" if value >= goal else "no")
        lines.append(f"| {name} | {'n/a' if value is None else shown.format(value)} | {met} |")
    ratio = deep.p50_ms / first.p50_ms
    lines += [
        f"| list page {figures.deep_page:,} p50 within 1.5x of page 1 | {ratio:.2f}x "
        f"| {'yes' if ratio <= 1.5 else 'no'} |",
        "",
        *cost_breakdown(figures),
        *mix_breakdown(figures),
    ]
    return lines


def history(figures: CatalogFigures) -> Figures:
    """This part's figures for the history (bench/rendering.py): every ratio and requests/s row."""
    herd, conventional = figures.mixes["Herd"], figures.mixes["conventional"]
    pages = figures.pages
    ceiling, cold = pages["minimal view (app)"], pages["product page, conventional (no caches)"]
    edge, warm = pages["warm product page, edge cache"], pages["warm product page (app)"]
    first, deep = figures.keyset.values()
    ratios = {
        "mix: Herd / conventional, req/s": herd.rps / conventional.rps,
        "mix: Herd / conventional, p50": herd.p50_ms / conventional.p50_ms,
        "mix: Herd / conventional, p99": herd.p99_ms / conventional.p99_ms,
        "warm product page (app) / minimal view": warm.rps / ceiling.rps,
        "warm product page (app) / no caches": warm.rps / cold.rps,
        "warm product page (edge cache) / minimal view": edge.rps / ceiling.rps,
        "deep list page / page 1, p50": deep.p50_ms / first.p50_ms,
        **logged_in_ratios(pages),
    }
    if figures.replica_share is not None:
        ratios["SELECTs on the replica (mix, Herd)"] = figures.replica_share
    rates = {f"mix, {name}": run.rps for name, run in figures.mixes.items()}
    rates |= {name: run.rps for name, run in [*pages.items(), *figures.keyset.items()]}
    measures = {
        f"{name}: {kind} per request": total
        for name, trips in figures.round_trips.items()
        for kind, total in trip_totals(trips).items()
    }
    return {"ratios": ratios, "requests/s": rates, "measures": measures}


def main() -> None:
    figures = measure()
    print(
        f"## Catalog on the herd ({platform.node()}, {os.cpu_count()} cores, {figures.replicas} app replicas, "
        f"{figures.products:,} products; wrk -t1 -c{CONNECTIONS} -d{DURATION}; medians of {ROUNDS} rounds)"
    )
    pages = figures.pages
    ceiling, cold = pages["minimal view (app)"], pages["product page, conventional (no caches)"]
    edge, warm = pages["warm product page, edge cache"], pages["warm product page (app)"]
    table(
        "Pages through HAProxy",
        list(pages.items()),
        [
            "",
            f"- warm product page as deployed (edge cache) / minimal view: **{edge.rps / ceiling.rps:.2f}**"
            f" of the app's ceiling; / no caches: **{edge.rps / cold.rps:.2f}x**",
            f"- warm product page from the app / minimal view: **{warm.rps / ceiling.rps:.2f}**;"
            f" / no caches: **{warm.rps / cold.rps:.2f}x**",
            *(f"- {name}: **{ratio:.2f}**" for name, ratio in logged_in_ratios(pages).items()),
        ],
    )
    herd, conventional = figures.mixes["Herd"], figures.mixes["conventional"]
    share = "n/a" if figures.replica_share is None else f"{figures.replica_share:.1%}"
    hits = figures.cache_hits
    table(
        f"Browse-heavy mix (1 in 5 requests by one of {USERS} logged-in shoppers, 1 in 50 a review post)",
        list(figures.mixes.items()),
        [
            "",
            f"- Herd / conventional: **{herd.rps / conventional.rps:.2f}x** the requests/s",
            f"- SELECTs that ran on the replica (Herd): **{share}** (median of the rounds; pg_stat_statements)",
            "- cache hit ratios (Herd): "
            + ("n/a" if hits is None else ", ".join(f"{c} {r:.1%}" for c, (r, _n) in hits.items())),
        ],
    )
    first, deep_run = figures.keyset.values()
    table(
        "Keyset pagination at depth (wrk -c4)",
        list(figures.keyset.items()),
        ["", f"- p50 at page {figures.deep_page:,} / p50 at page 1: **{deep_run.p50_ms / first.p50_ms:.2f}**"],
    )
    print("\n".join(["", *cost_breakdown(figures)]))


if __name__ == "__main__":
    main()
