"""The catalog on the herd, through HAProxy: what the caches and the replicas buy.

Brings up a herd of its own (the ``bench`` profile, on its own ports: PostgreSQL
primary + replica, Redis, RabbitMQ, ``BENCH_REPLICAS`` app replicas, HAProxy), loads
``BENCH_PRODUCTS`` products, and drives it with wrk from a separate process:

1. a minimal view (``/robots.txt``, through the whole middleware stack): the ceiling
   of the app;
2. a warm product page (anonymous) as deployed: from HAProxy's edge cache;
3. the same page from the app (past the edge cache), served from the object cache;
4. the same page with the query and object caches off (the replicas restarted with
   ``HERD_CACHES_ENABLED=false``), measured in the same run;
5. a browse-heavy mix (product pages, lists, searches, ``BENCH_USERS`` logged-in
   shoppers, a review post now and then), counting with pg_stat_statements where each
   SELECT ran;
6. keyset pagination at depth: list page 1 against page 10,000 (``BENCH_DEEP_PAGE``).

Cases 1, 3, 4 and 6 send ``Cache-Control: no-cache``, which HAProxy's edge cache obeys,
so they measure the replicas. Every figure is a median over ``BENCH_ROUNDS`` rounds; rounds alternate the cases so
drift on a shared machine hits all alike. Prints Markdown tables.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from bench.wrk import NO_EDGE_CACHE, Run, median_run, wrk  # noqa: E402
from deploy.herd import PROFILES, VENV_PYTHON, Herd, run  # noqa: E402

PRODUCTS = int(os.environ.get("BENCH_PRODUCTS", "1000000"))
REPLICAS = int(os.environ.get("BENCH_REPLICAS", "2"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DURATION = os.environ.get("BENCH_DURATION", "8s")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
DEEP_PAGE = int(os.environ.get("BENCH_DEEP_PAGE", "10000"))
USERS = int(os.environ.get("BENCH_USERS", "64"))
PAGE_SIZE = 24
PASSWORD = "bench-password-1234"

PROFILE = PROFILES["bench"]
PG = PROFILE.port(55432)

MIX_SCRIPT = """
local paths, cookies, csrf = {}, {}, {}
local n = 0
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  for line in io.lines(args[2]) do
    local session, token = line:match("([^ ]+) ([^ ]+)")
    cookies[#cookies + 1] = session
    csrf[#csrf + 1] = token
  end
end
request = function()
  n = n + 1
  local path = paths[math.random(#paths)]
  if n % 5 == 0 then
    local i = math.random(#cookies)
    local headers = {["Cookie"] = "sessionid=" .. cookies[i] .. "; csrftoken=" .. csrf[i]}
    if n % 50 == 0 and path:match("^/p/") then
      headers["Content-Type"] = "application/x-www-form-urlencoded"
      local body = "csrfmiddlewaretoken=" .. csrf[i] .. "&rating=" .. math.random(5) .. "&text=bench"
      return wrk.format("POST", path .. "review/", headers, body)
    end
    return wrk.format("GET", path, headers)
  end
  return wrk.format("GET", path)
end
"""


def sql(query: str, port: int = PG) -> list[tuple]:
    with psycopg.connect(host="127.0.0.1", port=port, user="herd", dbname="herd", autocommit=True) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def manage(*args: str) -> None:
    env = {"PATH": os.environ.get("PATH", ""), **PROFILE.django_env()}
    run([str(VENV_PYTHON), "manage.py", *args], env=env, log=PROFILE.logs / "bench-setup.log", cwd=ROOT)


def prepare() -> Herd:
    herd = Herd(PROFILE, replicas=REPLICAS)
    herd.start_services()
    manage("migrate", "--noinput")
    manage("collectstatic", "--noinput")
    have = sql("SELECT count(*) FROM catalog_product")[0][0]
    if have < PRODUCTS:
        print(f"loading {PRODUCTS - have} products (once; kept in .herd/bench)...", flush=True)
        manage("seed_catalog", "--products", str(PRODUCTS - have))
    sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return herd


def restart_replicas(herd: Herd, caches: bool) -> None:
    herd.extra_env = {"HERD_CACHES_ENABLED": "true" if caches else "false", "DJANGO_LOG_LEVEL": "WARNING"}
    for web in herd.webs():
        web.stop()
    herd.start_herd_processes()
    # Measure only once HAProxy sends traffic to every replica again.
    deadline = time.monotonic() + 30
    while set(herd.haproxy().server_states().values()) != {"UP"}:
        if time.monotonic() > deadline:
            raise SystemExit(f"HAProxy did not see the replicas up: {herd.haproxy().server_states()}")
        time.sleep(0.2)


def log_in_users(count: int) -> list[tuple[str, str]]:
    """Session and CSRF cookies of ``count`` users logged in through the load balancer."""
    usernames = [f"bench{number}" for number in range(count)]
    manage("shell", "-c", _create_users(usernames))
    pairs = []
    for username in usernames:
        with httpx.Client(base_url=PROFILE.url) as client:
            page = client.get("/accounts/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            client.post(
                "/accounts/login/", data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token}
            )
            pairs.append((client.cookies["sessionid"], client.cookies["csrftoken"]))
    return pairs


def _create_users(usernames: list[str]) -> str:
    return (
        "from accounts.models import User; from accounts import services\n"
        f"for name in {usernames!r}:\n"
        "    User.objects.filter(username=name).exists() or "
        f"services.create_user(username=name, email=name + '@example.com', password={PASSWORD!r})"
    )


def mix_paths(slugs: list[str], categories: list[str]) -> list[str]:
    words = ["a", "pro", "max", "mini", "eco"]
    paths = [f"/p/{slug}/" for slug in slugs]
    paths += [f"/c/{slug}/" for slug in categories] * 20
    paths += ["/products/", "/"] * 200
    paths += [f"/products/?q={word}" for word in words] * 20
    return paths


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


def replica_share() -> tuple[int, int]:
    """The app's plain SELECTs on the primary and on the replica. Left out: what is not a
    read the router could place: connection checks (``SELECT 1``, normalized to
    ``SELECT $1``) and set-up (``set_config``), health and WAL-position checks, locking
    reads (``FOR UPDATE``) and PostgreSQL's own foreign-key checks (``FOR KEY SHARE``),
    which belong to writes, and this benchmark's own queries."""
    ignore = (
        "query ~* '^SELECT \\$1$' OR query ILIKE 'SELECT 1%' OR query ILIKE '%set_config%'"
        " OR query ILIKE '%pg_%lsn%' OR query ILIKE '%pg_is_in_recovery%'"
        " OR query ILIKE '%FOR UPDATE%' OR query ILIKE '%FOR KEY SHARE%' OR query ILIKE '%pg_stat_statements%'"
    )
    counts = []
    for port in (PG, PG + 1):
        rows = sql(
            f"SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements WHERE query ILIKE 'SELECT%' AND NOT ({ignore})",
            port,
        )
        counts.append(int(rows[0][0]))
    return counts[0], counts[1]


def reset_statements() -> None:
    for port in (PG, PG + 1):
        sql("SELECT pg_stat_statements_reset()", port)


def table(title: str, rows: list[tuple[str, Run]], extra: list[str]) -> None:
    print(f"\n### {title}\n")
    print("| case | req/s | p50 ms | p99 ms | failed |")
    print("|---|---:|---:|---:|---:|")
    for name, result in rows:
        print(f"| {name} | {result.rps:.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f} | {result.errors} |")
    for line in extra:
        print(line)


def main() -> None:
    herd = prepare()
    # A browse over many products: most product pages are read a few times, some once.
    slugs = [row[0] for row in sql("SELECT slug FROM catalog_product TABLESAMPLE SYSTEM (1) LIMIT 5000")]
    categories = [row[0] for row in sql("SELECT slug FROM catalog_category")]
    hot = slugs[0]
    url = PROFILE.url.rstrip("/")
    cases: dict[str, list[Run]] = {
        "minimal view (app)": [],
        "warm product page, edge cache": [],
        "warm product page (app)": [],
        "product page, caches off (app)": [],
    }
    for _ in range(ROUNDS):
        restart_replicas(herd, caches=True)
        httpx.get(f"{url}/p/{hot}/")
        cases["minimal view (app)"].append(wrk(f"{url}/robots.txt", DURATION, CONNECTIONS, headers=NO_EDGE_CACHE))
        cases["warm product page, edge cache"].append(wrk(f"{url}/p/{hot}/", DURATION, CONNECTIONS))
        cases["warm product page (app)"].append(wrk(f"{url}/p/{hot}/", DURATION, CONNECTIONS, headers=NO_EDGE_CACHE))
        restart_replicas(herd, caches=False)
        cases["product page, caches off (app)"].append(
            wrk(f"{url}/p/{hot}/", DURATION, CONNECTIONS, headers=NO_EDGE_CACHE)
        )
    restart_replicas(herd, caches=True)
    medians = {name: median_run(runs) for name, runs in cases.items()}

    sessions = log_in_users(USERS)
    with tempfile.TemporaryDirectory() as folder:
        paths_file, cookies_file, script = (Path(folder) / n for n in ("paths", "cookies", "mix.lua"))
        paths_file.write_text("\n".join(mix_paths(slugs, categories)) + "\n")
        cookies_file.write_text("\n".join(f"{s} {c}" for s, c in sessions) + "\n")
        script.write_text(MIX_SCRIPT)
        mixes, shares = [], []
        for _ in range(ROUNDS):
            reset_statements()
            mixes.append(wrk(url, DURATION, CONNECTIONS, script, (str(paths_file), str(cookies_file))))
            on_primary, on_replica = replica_share()
            shares.append(on_replica / max(on_primary + on_replica, 1))
    mix = median_run(mixes)

    deep = deep_cursor_url(DEEP_PAGE)
    lists: dict[str, list[Run]] = {"list page 1": [], f"list page {DEEP_PAGE:,}": []}
    for _ in range(ROUNDS):
        lists["list page 1"].append(wrk(f"{url}/products/", DURATION, 4, headers=NO_EDGE_CACHE))
        lists[f"list page {DEEP_PAGE:,}"].append(wrk(f"{url}{deep}", DURATION, 4, headers=NO_EDGE_CACHE))
    list_medians = {name: median_run(runs) for name, runs in lists.items()}

    products = sql("SELECT count(*) FROM catalog_product")[0][0]
    print(
        f"## Catalog on the herd ({platform.node()}, {os.cpu_count()} cores, {REPLICAS} app replicas, "
        f"{products:,} products; wrk -t1 -c{CONNECTIONS} -d{DURATION}; medians of {ROUNDS} rounds)"
    )
    ceiling, cold = medians["minimal view (app)"], medians["product page, caches off (app)"]
    edge, warm = medians["warm product page, edge cache"], medians["warm product page (app)"]
    table(
        "Pages through HAProxy",
        list(medians.items()),
        [
            "",
            f"- warm product page as deployed (edge cache) / minimal view: **{edge.rps / ceiling.rps:.2f}**"
            f" of the app's ceiling; / caches off: **{edge.rps / cold.rps:.2f}x**",
            f"- warm product page from the app / minimal view: **{warm.rps / ceiling.rps:.2f}**;"
            f" / caches off: **{warm.rps / cold.rps:.2f}x**",
        ],
    )
    share = sorted(shares)[len(shares) // 2]
    table(
        f"Browse-heavy mix (1 in 5 requests by one of {USERS} logged-in shoppers, 1 in 50 a review post)",
        [("mix", mix)],
        [
            "",
            f"- SELECTs that ran on the replica: **{share:.1%}** (median of the rounds; pg_stat_statements)",
        ],
    )
    first, deep_run = list_medians.values()
    table(
        "Keyset pagination at depth (wrk -c4)",
        list(list_medians.items()),
        [
            "",
            f"- p50 at page {DEEP_PAGE:,} / p50 at page 1: **{deep_run.p50_ms / first.p50_ms:.2f}**",
        ],
    )


if __name__ == "__main__":
    main()
