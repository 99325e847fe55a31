"""The herd's command line:

    python3 -m deploy.herd up [--replicas N]   bring the herd up (idempotent), print the URL
    python3 -m deploy.herd up --postgres patroni   the same, PostgreSQL as a Patroni cluster
    python3 -m deploy.herd status              one line per process
    python3 -m deploy.herd start NAME          start one process again (web2, worker, ...)
    python3 -m deploy.herd restart             rolling restart of the app replicas, one by one
    python3 -m deploy.herd scale N             N app replicas, added or drained while serving
    python3 -m deploy.herd down                stop every process of the herd
    python3 -m deploy.herd services            only the data services (used by the tests)
    python3 -m deploy.herd test [PYTEST ARGS]  services up, pytest, services down

A *profile* (``--profile``, or ``HERD_PROFILE``) is a state folder and a block of ports:
``local`` (the default) is the herd people open in a browser; ``test`` is the private one
``make test`` starts, on other ports, so the tests never touch the local herd. State and
logs live under ``.herd/<profile>/`` (ignored by git).

Standard library only: this runs before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from deploy.herd.control import Herd
from deploy.herd.debian import ensure_packages
from deploy.herd.processes import HerdError
from deploy.herd.profiles import PROFILES, ROOT, VENV_PYTHON


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m deploy.herd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default=os.environ.get("HERD_PROFILE", "local"))
    parser.add_argument(
        "--postgres",
        choices=("plain", "patroni"),
        default=None,
        help="PostgreSQL as a primary and a streaming replica (plain), or a Patroni cluster with etcd "
        "behind HAProxy (deploy/herd/patroni.py); default: as the herd last ran it, else plain",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="bring the herd up (idempotent)")
    up.add_argument("--replicas", type=int, default=None, help="app replicas (default 3, or as last time)")
    up.add_argument("--postgres", choices=("plain", "patroni"), default=argparse.SUPPRESS, help="as above")
    commands.add_parser("down", help="stop every process")
    commands.add_parser("status", help="one line per process")
    start = commands.add_parser("start", help="start one process")
    start.add_argument("name")
    commands.add_parser("restart", help="rolling restart of the app replicas, one at a time")
    scale = commands.add_parser("scale", help="add or drain app replicas while serving")
    scale.add_argument("replicas", type=int)
    commands.add_parser("services", help="start only the data services")
    test = commands.add_parser("test", help="services up, pytest, services down")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    # Everything after `test` is pytest's, options first included (`test -k router`):
    # argparse's REMAINDER refuses a leading option, so those are parsed here.
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")

    profile = PROFILES[args.profile]
    herd = Herd(profile, args.replicas if args.command == "up" else None, postgres=args.postgres)
    try:
        if args.command == "up":
            herd.up()
        elif args.command == "down":
            herd.down()
        elif args.command == "status":
            return 0 if herd.status() else 1
        elif args.command == "start":
            herd.start(args.name)
        elif args.command == "restart":
            herd.rolling_restart()
        elif args.command == "scale":
            herd.scale(args.replicas)
        elif args.command == "services":
            herd.start_services()
        elif args.command == "test":
            return run_tests([*unknown, *args.pytest_args] if unknown else args.pytest_args)
    except HerdError as error:
        print(f"herd: {error}", file=sys.stderr)
        return 1
    return 0


def run_tests(pytest_args: list[str]) -> int:
    """Start the test profile's services, run pytest against them, stop them."""
    herd = Herd(PROFILES["test"], replicas=0, postgres="plain")
    try:
        # The browser tests drive Debian's Chromium (Playwright cannot download one here);
        # the accessibility test installs its pinned axe-core with npm; etcd for the Patroni
        # tests (deploy/tests/test_failover.py).
        extra = {"/usr/bin/chromium": "chromium", "/usr/bin/npm": "npm", "/usr/bin/etcd": "etcd-server"}
        ensure_packages(extra=extra)
        herd.start_services()
        env = {**os.environ, **herd.profile.django_env()}
        return subprocess.run([str(VENV_PYTHON), "-m", "pytest", *pytest_args], cwd=ROOT, env=env).returncode
    finally:
        herd.down()
