"""Which server should a replica's pages run under?

Compares Django's async handler under uvicorn, Django's WSGI handler inside uvicorn
(what a Herd replica runs, config.asgi) and gunicorn's threaded WSGI server beside it.
Starts one single-process server of each kind on this machine, against the data
services of the ``bench`` profile (started here), and drives each with wrk from a
separate process. Rounds alternate between the servers so drift on a shared machine
hits all alike; the table gives medians over the rounds and each server's req/s as
a ratio to the async handler's, measured in the same round.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

from bench.wrk import wrk
from deploy.herd.control import Herd
from deploy.herd.processes import http_status, terminate
from deploy.herd.profiles import PROFILES, VENV_PYTHON

ROOT = Path(__file__).resolve().parent.parent

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DURATION = os.environ.get("BENCH_DURATION", "8s")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
PAGES = {"home page": "/", "login form": "/admin/login/", "readiness": "/readyz"}

UVICORN = [str(ROOT / ".venv/bin/uvicorn"), "--lifespan", "off", "--no-access-log"]
SERVERS = {
    "uvicorn, Django's async handler": (
        8901,
        [*UVICORN, "--port", "8901", "--factory", "django.core.asgi:get_asgi_application"],
    ),
    "uvicorn, Django's WSGI handler (Herd)": (8902, [str(VENV_PYTHON), "manage.py", "serve", "--port", "8902"]),
    "gunicorn gthread, WSGI": (
        8903,
        [
            str(ROOT / ".venv/bin/gunicorn"),
            "config.wsgi",
            "-b",
            "127.0.0.1:8903",
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            "4",
        ],
    ),
}


def main() -> None:
    Herd(PROFILES["bench"], replicas=0).start_services()
    env = {**os.environ, **PROFILES["bench"].django_env(), "HERD_REPLICA_ID": "bench"}
    processes = {}
    try:
        for name, (port, command) in SERVERS.items():
            processes[name] = subprocess.Popen(
                command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 30
            while http_status(f"http://127.0.0.1:{port}/readyz") != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not come up")
                time.sleep(0.2)
        results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for _ in range(ROUNDS):
            for page, path in PAGES.items():
                for name, (port, _) in SERVERS.items():
                    run = wrk(f"http://127.0.0.1:{port}{path}", DURATION, CONNECTIONS)
                    if run.errors:
                        raise SystemExit(f"{name} {path}: {run.errors} failed requests")
                    results.setdefault((page, name), []).append((run.rps, run.p50_ms, run.p99_ms))
    finally:
        for process in processes.values():
            terminate(process.pid, group=True)

    print(
        f"# Serving: one process per server ({platform.node()}, {os.cpu_count()} cores, "
        f"wrk -t1 -c{CONNECTIONS} -d{DURATION}, median of {ROUNDS} rounds)\n"
    )
    print("| page | server | req/s | p50 ms | p99 ms | req/s vs async handler |")
    print("|---|---|---:|---:|---:|---:|")
    for page in PAGES:
        baseline = None
        for name in SERVERS:
            runs = results[(page, name)]
            rps, p50, p99 = (statistics.median(run[i] for run in runs) for i in range(3))
            baseline = baseline or rps
            print(f"| {page} | {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {rps / baseline:.2f} |")


if __name__ == "__main__":
    main()
