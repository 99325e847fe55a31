#!/usr/bin/env python3
"""The local herd: every process of Herd on one machine, on loopback, without Docker.

    python3 deploy/herd.py up [--replicas N]   bring the herd up (idempotent), print the URL
    python3 deploy/herd.py status              one line per process
    python3 deploy/herd.py start NAME          start one process again (web2, worker, ...)
    python3 deploy/herd.py restart             rolling restart of the app replicas, one by one
    python3 deploy/herd.py scale N             N app replicas, added or drained while serving
    python3 deploy/herd.py down                stop every process of the herd
    python3 deploy/herd.py services            only the data services (used by the tests)
    python3 deploy/herd.py test [PYTEST ARGS]  services up, pytest, services down

A *profile* is a state folder and a block of ports: ``local`` (the default) is the
herd people open in a browser; ``test`` is the private one ``make test`` starts, on
other ports, so the tests never touch the local herd. State and logs live under
``.herd/<profile>/`` (ignored by git).

Standard library only: this runs before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import hashlib
import io
import itertools
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
IS_ROOT = os.geteuid() == 0

DEBIAN_PACKAGES = {
    "postgresql": "postgresql",
    "redis-server": "redis-server",
    "haproxy": "haproxy",
    "rabbitmq-server": "rabbitmq-server",
}


# Shard databases of per-user data each profile runs, in its primary's server (docs/SHARDING.md).
SHARD_DATABASES = 2

# Seconds a stopping replica gives requests in flight (``manage.py serve --graceful-timeout``).
GRACEFUL_TIMEOUT = 20.0


class HerdError(Exception):
    """A step of the herd failed; the message says which and where its log is."""


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    name: str
    port_offset: int
    # The test profile trades durability for speed; the local herd keeps it.
    durable: bool

    @property
    def state(self) -> Path:
        return ROOT / ".herd" / self.name

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def service_state(self) -> Path:
        """Where the servers that run as users of their own (PostgreSQL, RabbitMQ) keep their
        data and logs: the profile's folder, unless those users cannot enter this clone (as
        root, a clone in root's home or a ``mktemp -d`` folder); then a folder of
        ``/var/lib/herd`` named after the clone."""
        if not IS_ROOT or others_can_enter(ROOT):
            return self.state
        key = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
        return Path("/var/lib/herd") / f"{ROOT.name}-{key}" / self.name

    @property
    def run(self) -> Path:
        return self.state / "run"

    def port(self, base: int) -> int:
        return base + self.port_offset

    @property
    def lb_port(self) -> int:
        return self.port(8000)

    def web_port(self, number: int) -> int:
        return self.port(8000) + number

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}/"

    def django_env(self, database: str = "herd") -> dict[str, str]:
        """The environment every Django process of this profile runs with."""
        pg = self.port(55432)
        redis_state, redis_cache = self.port(56379), self.port(56380)
        return {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_ENV": "development",
            "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1,[::1]",
            "DJANGO_STATIC_ROOT": str(self.state / "static"),
            "DATABASE_URL": f"postgres://herd@127.0.0.1:{pg}/{database}",
            "DATABASE_REPLICA_URLS": f"postgres://herd@127.0.0.1:{pg + 1}/{database}",
            # Per-user data (jobs, notifications) on shard databases in the same server.
            "SHARD_DATABASE_URLS": ",".join(f"postgres://herd@127.0.0.1:{pg}/{name}" for name in shard_names(database)),
            "SHARD_REPLICA_URLS": ",".join(
                f"postgres://herd@127.0.0.1:{pg + 1}/{name}" for name in shard_names(database)
            ),
            "REDIS_STATE_URL": f"redis://127.0.0.1:{redis_state}/0",
            "REDIS_CHANNELS_URL": f"redis://127.0.0.1:{redis_state}/1",
            "REDIS_CACHE_URL": f"redis://127.0.0.1:{redis_cache}/0",
            "BROKER_URL": f"amqp://guest:guest@127.0.0.1:{self.port(55672)}/%2F",
            "HERD_DRAIN_SECONDS": "3",
            "PYTHONUNBUFFERED": "1",
        }


def shard_names(database: str) -> list[str]:
    """The shard databases beside ``database`` (``herd_shard1``, ``herd_shard2``); the tests'
    ``test_herd`` has ``test_herd_shard1``..., the names Django gives their test databases."""
    return [f"{database}_shard{number}" for number in range(1, SHARD_DATABASES + 1)]


def _test_profile() -> Profile:
    """The test profile; ``HERD_TEST_SLOT=N`` (N >= 1) gives a second, third... test herd on
    ports and folders of its own, so two suites can run side by side on one machine."""
    slot = int(os.environ.get("HERD_TEST_SLOT", "0") or 0)
    if slot == 0:
        return Profile("test", port_offset=100, durable=False)
    return Profile(f"test{slot}", port_offset=1000 * slot, durable=False)


PROFILES = {
    "local": Profile("local", port_offset=0, durable=True),
    "test": _test_profile(),
    "bench": Profile("bench", port_offset=200, durable=False),
    "drills": Profile("drills", port_offset=300, durable=False),
}


# --------------------------------------------------------------------------- helpers


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# The services' ports lie inside Linux's ephemeral range (32768-60999), where any
# outgoing connection may take one as its local port just before a service binds it.
SERVICE_PORTS = (55432, 55433, 55672, 55673, 56379, 56380)
RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


def reserve_ports(profile: Profile) -> None:
    """Keep the profile's service ports out of the ephemeral range (as root; else a no-op)."""
    if not IS_ROOT:
        return
    try:
        current = {part for part in RESERVED_PORTS.read_text().strip().split(",") if part}
        wanted = current | {str(profile.port(base)) for base in SERVICE_PORTS}
        if wanted != current:
            RESERVED_PORTS.write_text(",".join(sorted(wanted)))
    except OSError:
        pass  # a container without a writable /proc/sys: the race stays, rarely lost


def wait_for(predicate, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    hint = f"; see {log}" if log else ""
    raise HerdError(f"{what} did not come up within {timeout:.0f}s{hint}")


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run(command: list[str], log: Path | None = None, env: dict | None = None, **kwargs) -> None:
    """Run a command to completion; on failure raise naming it and its log."""
    with open(log or os.devnull, "a") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env, **kwargs)
    if result.returncode != 0:
        hint = f"; see {log}" if log else ""
        raise HerdError(f"{' '.join(command[:3])} ... failed (exit {result.returncode}){hint}")


def others_can_enter(path: Path) -> bool:
    """Whether any user may pass through ``path`` and every folder above it (the x bit for others)."""
    return all(folder.stat().st_mode & 0o001 for folder in (path, *path.parents))


def as_user(user: str) -> list[str]:
    """Prefix that runs a command as ``user`` when we are root (PostgreSQL refuses root)."""
    return ["runuser", "-u", user, "--"] if IS_ROOT else []


def own(path: Path, user: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if IS_ROOT:
        shutil.chown(path, user, user)


def postgres_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]) if candidates else None


def missing_packages() -> list[str]:
    missing = []
    if postgres_bindir() is None:
        missing.append(DEBIAN_PACKAGES["postgresql"])
    for command, package in (
        ("redis-server", "redis-server"),
        ("haproxy", "haproxy"),
        ("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"),
    ):
        if shutil.which(command) is None and not Path(command).exists():
            missing.append(package)
    return missing


def ensure_packages(extra: dict[str, str] | None = None) -> None:
    """Install what is missing when root; otherwise name it. ``extra``: command -> package."""
    missing = missing_packages()
    missing += [package for command, package in (extra or {}).items() if not Path(command).exists()]
    if not missing:
        return
    if not IS_ROOT:
        raise HerdError(
            "missing Debian packages: "
            + " ".join(missing)
            + f"\n  install them with: sudo apt-get install -y {' '.join(missing)}"
        )
    print(f"installing Debian packages: {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env, stdout=subprocess.DEVNULL)
    # Debian starts the packaged services; the herd runs private ones on its own ports.
    still_missing = missing_packages()
    if still_missing:
        raise HerdError(f"apt-get did not provide: {' '.join(still_missing)}")


# --------------------------------------------------------------------------- processes


class Process:
    """One process of the herd: how to start it, find it, check it and stop it."""

    name: str
    port: int | None = None

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    @property
    def log(self) -> Path:
        return self.profile.logs / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return self.profile.run / f"{self.name}.pid"

    def pid(self) -> int | None:
        return read_pid(self.pidfile)

    def running(self) -> bool:
        return pid_alive(self.pid())

    def healthy(self) -> bool:
        return self.running() and (self.port is None or port_open(self.port))

    def start(self) -> None:
        raise NotImplementedError

    def ensure(self) -> bool:
        """Start unless already healthy; True when it was started."""
        if self.healthy():
            return False
        self.start()
        return True

    def stop(self) -> None:
        pid = self.pid()
        if pid_alive(pid):
            terminate(pid, group=self.own_group)
        self.pidfile.unlink(missing_ok=True)

    own_group = False
    detail = ""


def terminate(pid: int, group: bool, timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL: nothing is left behind."""
    kill = os.killpg if group else os.kill
    try:
        kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)


def spawn(process: Process, command: list[str], env: dict[str, str]) -> None:
    """Start a long-running child in its own session, logging to its log file."""
    process.profile.logs.mkdir(parents=True, exist_ok=True)
    process.profile.run.mkdir(parents=True, exist_ok=True)
    with open(process.log, "a") as log:
        child = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process.pidfile.write_text(f"{child.pid}\n")


class Postgres(Process):
    """A private PostgreSQL server: the primary, or a streaming replica of it."""

    def __init__(self, profile: Profile, replica: bool) -> None:
        super().__init__(profile)
        self.replica = replica
        self.name = "postgres-replica" if replica else "postgres-primary"
        self.port = profile.port(55433 if replica else 55432)
        self.data = profile.service_state / self.name
        self.bindir = postgres_bindir()

    @property
    def log(self) -> Path:
        # The server (as postgres) appends to it: beside its data.
        return self.profile.service_state / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        return read_pid(self.data / "postmaster.pid")

    def pg(self, program: str, *args: str) -> list[str]:
        return [*as_user("postgres"), str(self.bindir / program), *args]

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self.replica_from_primary() if self.replica else self.init_primary()
        self.prepare_log()
        run(self.pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"), log=self.log)
        if not self.replica:
            for name in ("herd", *shard_names("herd")):
                self.create_database(name)

    def prepare_data_dir(self) -> None:
        if self.data.exists():
            shutil.rmtree(self.data)
        own(self.data, "postgres")
        self.data.chmod(0o700)

    def prepare_log(self) -> None:
        """The server (as postgres) and this script (as root) both append to the log."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        if IS_ROOT:
            shutil.chown(self.log, "postgres", "postgres")

    def init_primary(self) -> None:
        self.prepare_data_dir()
        self.prepare_log()
        run(
            self.pg("initdb", "-D", str(self.data), "-U", "herd", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"),
            log=self.log,
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "wal_level": "replica",
            "max_wal_senders": "10",
            "hot_standby": "on",
            "hot_standby_feedback": "on",
            "max_connections": "300",
            # Per-statement counts, read by the benchmarks (bench/catalog.py).
            "shared_preload_libraries": "'pg_stat_statements'",
        }
        if not self.profile.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# deploy/herd.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        (self.data / "pg_hba.conf").write_text(
            "# deploy/herd.py: loopback only, trusted (a private development cluster)\n"
            "host all all 127.0.0.1/32 trust\n"
            "host replication all 127.0.0.1/32 trust\n"
        )

    def replica_from_primary(self) -> None:
        primary = Postgres(self.profile, replica=False)
        primary.ensure()
        self.prepare_data_dir()
        self.prepare_log()
        run(
            self.pg(
                "pg_basebackup",
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
                "-U",
                "herd",
                "-D",
                str(self.data),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ),
            log=self.log,
        )
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            conf.write(f"port = {self.port}\n")

    def create_database(self, name: str) -> None:
        psql = [
            str(self.bindir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "herd",
            "-d",
            "postgres",
            "-tAc",
        ]
        query = f"SELECT 1 FROM pg_database WHERE datname = '{name}'"  # noqa: S608 (our own constant)
        exists = subprocess.run([*psql, query], capture_output=True, text=True)
        if exists.stdout.strip() != "1":
            run([*psql, f'CREATE DATABASE "{name}"'], log=self.log)

    def stop(self) -> None:
        if self.running():
            run(self.pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"), log=self.log)

    @property
    def detail(self) -> str:
        return "streaming from the primary" if self.replica else "primary"


class Redis(Process):
    def __init__(self, profile: Profile, role: str) -> None:
        super().__init__(profile)
        self.role = role
        self.name = f"redis-{role}"
        self.port = profile.port(56379 if role == "state" else 56380)

    def start(self) -> None:
        data = self.profile.state / self.name
        data.mkdir(parents=True, exist_ok=True)
        self.profile.logs.mkdir(parents=True, exist_ok=True)
        self.profile.run.mkdir(parents=True, exist_ok=True)
        common = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.log),
            "--dir",
            str(data),
            "--save",
            "",
        ]
        if self.role == "state":
            # Sessions and socket groups: never evicted, and an append-only file so a
            # restart logs nobody out.
            role_args = ["--maxmemory-policy", "noeviction", "--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            # The cache: entries have a time to live and are evicted; the versions that
            # guard them have none and never are (scaling.cache).
            role_args = ["--maxmemory", "256mb", "--maxmemory-policy", "volatile-lru", "--appendonly", "no"]
        run([*common, *role_args], log=self.log)
        wait_for(lambda: port_open(self.port), 10, self.name, self.log)

    @property
    def detail(self) -> str:
        return "sessions, socket groups (noeviction, AOF)" if self.role == "state" else "cache (volatile-lru)"


class RabbitMQ(Process):
    """A private RabbitMQ node: the Dramatiq broker."""

    name = "rabbitmq"
    detail = "Dramatiq broker"

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.port = profile.port(55672)
        self.home = profile.service_state / "rabbitmq"
        self.node = f"herd-{profile.name}@localhost"

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 1),
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_PID_FILE": str(self.pidfile),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq"),
        }

    @property
    def pidfile(self) -> Path:
        # Written by the node itself, so inside the folder its user owns.
        return self.home / "rabbitmq.pid"

    def ctl(self, *args: str) -> list[str]:
        return [
            *as_user("rabbitmq"),
            "env",
            *(f"{k}={v}" for k, v in self.env().items()),
            "/usr/lib/rabbitmq/bin/rabbitmqctl",
            "-n",
            self.node,
            *args,
        ]

    def start(self) -> None:
        own(self.home, "rabbitmq")
        enabled = self.home / "enabled_plugins"
        if not enabled.exists():
            enabled.write_text("[].\n")
            if IS_ROOT:
                shutil.chown(enabled, "rabbitmq", "rabbitmq")
        self.profile.logs.mkdir(parents=True, exist_ok=True)
        command = [
            *as_user("rabbitmq"),
            "env",
            *(f"{k}={v}" for k, v in self.env().items()),
            "/usr/lib/rabbitmq/bin/rabbitmq-server",
            "-detached",
        ]
        run(command, log=self.log, cwd=self.home)
        wait_for(lambda: port_open(self.port), 60, self.name, self.home / "log")

    def stop(self) -> None:
        if self.running():
            subprocess.run(self.ctl("stop"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.home)
            pid = self.pid()
            if pid_alive(pid):
                terminate(pid, group=False)
        self.pidfile.unlink(missing_ok=True)


class Django(Process):
    """A process running this repository's code from the virtualenv."""

    own_group = True

    def __init__(self, profile: Profile, database: str = "herd", extra_env: dict[str, str] | None = None) -> None:
        super().__init__(profile)
        self.database = database
        self.extra_env = extra_env or {}

    @property
    def tmpdir(self) -> Path:
        """This process's own temporary folder: the tests check that it stays empty."""
        return self.profile.state / "tmp" / self.name

    def env(self) -> dict[str, str]:
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **self.profile.django_env(self.database),
            "HERD_REPLICA_ID": self.name,
            "TMPDIR": str(self.tmpdir),
            **self.extra_env,
        }


class Web(Django):
    """One app replica: HTTP and WebSockets under ``manage.py serve``."""

    def __init__(self, profile: Profile, number: int, database: str = "herd", extra_env: dict | None = None) -> None:
        super().__init__(profile, database, extra_env)
        self.number = number
        self.name = f"web{number}"
        self.port = profile.web_port(number)
        self.detail = f"app replica, http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        spawn(self, [str(VENV_PYTHON), "manage.py", "serve", "--port", str(self.port)], self.env())

    def wait_ready(self) -> None:
        wait_for(
            lambda: http_status(f"http://127.0.0.1:{self.port}/readyz") == 200 or not self.running(),
            60,
            self.name,
            self.log,
        )
        if not self.running():
            raise HerdError(f"{self.name} exited at start; see {self.log}")

    def healthy(self) -> bool:
        return self.running() and http_status(f"http://127.0.0.1:{self.port}/healthz") == 200


class Worker(Django):
    name = "worker"
    detail = "Dramatiq worker"

    def start(self) -> None:
        command = [str(VENV_PYTHON), "manage.py", "rundramatiq", "--processes", "1", "--threads", "4"]
        spawn(self, command, self.env())
        time.sleep(1.0)
        if not self.running():
            raise HerdError(f"{self.name} exited at start; see {self.log}")


def render_haproxy_config(*, bind: str, stats_bind: str, stats_socket: str, servers: list[tuple[str, str]]) -> str:
    """deploy/haproxy.cfg.template filled in: one template for the local herd and for compose.

    ``servers`` are (name, "host:port") pairs; a host name that does not resolve yet is
    resolved later through the template's ``resolvers`` section.
    """
    template = string.Template((ROOT / "deploy" / "haproxy.cfg.template").read_text())
    return template.substitute(
        BIND=bind,
        STATS_BIND=stats_bind,
        STATS_SOCKET=stats_socket,
        SERVERS="\n".join(f"    server {name} {address} check" for name, address in servers),
    )


class HAProxy(Process):
    name = "haproxy"

    def __init__(self, profile: Profile, replicas: list[int]) -> None:
        super().__init__(profile)
        self.replicas = replicas
        self.port = profile.lb_port
        self.stats_port = profile.port(8404)
        self.config = profile.state / "haproxy.cfg"
        self.socket = profile.run / "haproxy.sock"

    @property
    def detail(self) -> str:
        return f"load balancer, {self.profile.url} (stats http://127.0.0.1:{self.stats_port}/)"

    def render(self) -> str:
        return render_haproxy_config(
            bind=f"127.0.0.1:{self.port}",
            stats_bind=f"127.0.0.1:{self.stats_port}",
            stats_socket=str(self.socket),
            servers=[(f"web{n}", f"127.0.0.1:{self.profile.web_port(n)}") for n in self.replicas],
        )

    def ensure(self) -> bool:
        """Start, or reload when the set of replicas changed (seamless: -sf)."""
        config = self.render()
        changed = not self.config.exists() or self.config.read_text() != config
        if self.healthy() and not changed:
            return False
        self.profile.run.mkdir(parents=True, exist_ok=True)
        self.config.write_text(config)
        run(["haproxy", "-c", "-q", "-f", str(self.config)], log=self.log)
        reload = ["-sf", str(self.pid())] if self.healthy() else []
        run(["haproxy", "-D", "-f", str(self.config), "-p", str(self.pidfile), *reload], log=self.log)
        wait_for(lambda: port_open(self.port), 10, self.name, self.log)
        return True

    start = ensure

    def command(self, line: str) -> str:
        """One command on the runtime API (the stats socket, ``level admin``); its answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(line.encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode().strip()

    def server_states(self) -> dict[str, str]:
        """What HAProxy thinks of each replica (UP, DOWN, MAINT, DRAIN, ...), from its stats socket."""
        if not self.socket.exists():
            return {}
        try:
            data = self.command("show stat")
        except OSError:
            return {}
        rows = csv.DictReader(io.StringIO(data.lstrip("# ")))
        return {
            row["svname"]: row["status"] for row in rows if row["pxname"] == "replicas" and row["svname"] != "BACKEND"
        }

    def state(self, name: str) -> str:
        return self.server_states().get(name, "")

    def out_of_rotation(self, name: str) -> bool:
        """HAProxy sends the replica nothing new: its checks failed, or it is in maintenance."""
        return self.state(name).startswith(("DOWN", "MAINT"))

    def write_config(self) -> None:
        """The rendered configuration on disk, without (re)loading it: a later start or
        reload keeps the set of replicas the runtime API gave the running HAProxy."""
        self.profile.run.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.render())

    def runtime(self, line: str, expect: str = "") -> str:
        """A runtime API command that must succeed (answer empty, or containing ``expect``)."""
        answer = self.command(line)
        if (expect and expect not in answer) or (not expect and answer):
            raise HerdError(f"haproxy refused `{line}`: {answer}")
        return answer

    def check_settings(self) -> list[str]:
        """The health-check settings of the template's ``default-server`` line: a server
        added through the runtime API inherits nothing from ``default-server``."""
        line = next(line for line in self.render().splitlines() if line.strip().startswith("default-server"))
        words = line.split()[1:]
        keep = {"inter", "fastinter", "downinter", "fall", "rise"}
        return [word for key, value in itertools.pairwise(words) if key in keep for word in (key, value)]

    def add_server(self, web: Web) -> None:
        """Add a replica to the running HAProxy; it takes traffic once it is UP.

        HAProxy 2.6 creates a dynamic server in maintenance with its checks off, hence
        the two ``enable`` commands. The replica is ready (``/readyz`` 200) before this.
        """
        server = f"replicas/{web.name}"
        settings = " ".join(self.check_settings())
        self.runtime(f"add server {server} 127.0.0.1:{web.port} check {settings}", expect="New server registered")
        self.runtime(f"enable health {server}")
        self.runtime(f"enable server {server}")

    def delete_server(self, name: str, timeout: float = 10.0) -> None:
        """Remove a replica that is out of rotation. ``del server`` needs it in maintenance
        and without any connection, idle ones included: HAProxy closes idle connections
        to a server that went away on its own, so this retries for a moment."""
        server = f"replicas/{name}"
        self.runtime(f"set server {server} state maint")
        deadline = time.monotonic() + timeout
        while (answer := self.command(f"del server {server}")) != "Server deleted.":
            if time.monotonic() > deadline:
                raise HerdError(f"haproxy would not delete {server}: {answer}")
            time.sleep(0.2)


# --------------------------------------------------------------------------- the herd


class Herd:
    """Every process of one profile. ``database`` names the database the apps use."""

    def __init__(
        self, profile: Profile, replicas: int | None = None, database: str = "herd", extra_env: dict | None = None
    ) -> None:
        self.profile = profile
        self.database = database
        self.extra_env = extra_env or {}
        self.replica_count = replicas if replicas is not None else self.recorded_replicas()

    def recorded_replicas(self) -> int:
        try:
            return int((self.profile.state / "replicas").read_text())
        except (OSError, ValueError):
            return 3

    def services(self) -> list[Process]:
        p = self.profile
        return [
            Postgres(p, replica=False),
            Postgres(p, replica=True),
            Redis(p, "state"),
            Redis(p, "cache"),
            RabbitMQ(p),
        ]

    def webs(self) -> list[Web]:
        return [Web(self.profile, n, self.database, self.extra_env) for n in range(1, self.replica_count + 1)]

    def stray_webs(self) -> list[Web]:
        """Replicas left running from an earlier, larger herd."""
        return self.stray_webs_beyond(self.replica_count)

    def stray_webs_beyond(self, replicas: int) -> list[Web]:
        numbers = [int(Path(f).stem[3:]) for f in glob.glob(str(self.profile.run / "web*.pid"))]
        return [Web(self.profile, n, self.database, self.extra_env) for n in sorted(numbers) if n > replicas]

    def haproxy(self) -> HAProxy:
        return HAProxy(self.profile, list(range(1, self.replica_count + 1)))

    def processes(self) -> list[Process]:
        return [*self.services(), *self.webs(), Worker(self.profile, self.database, self.extra_env), self.haproxy()]

    def start_services(self) -> None:
        ensure_packages()
        reserve_ports(self.profile)
        # WhiteNoise expects the static folder to exist even before collectstatic.
        (self.profile.state / "static").mkdir(parents=True, exist_ok=True)
        for process in self.services():
            say(process, "started" if process.ensure() else "already running")

    def prepare_database(self) -> None:
        env = {"PATH": os.environ.get("PATH", ""), **self.profile.django_env()}
        log = self.profile.logs / "setup.log"
        # A primary first started before sharding has no shard databases yet.
        primary = Postgres(self.profile, replica=False)
        for name in shard_names("herd"):
            primary.create_database(name)
        for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"], ["seed_demo"]):
            run([str(VENV_PYTHON), "manage.py", *command], log=log, env=env, cwd=ROOT)
        print(f"  {'database':<18} migrated, static files collected, demo data loaded")

    def collect_static(self) -> None:
        """The replicas' static files and manifest: pages naming a static file fail without them."""
        env = {"PATH": os.environ.get("PATH", ""), **self.profile.django_env(self.database)}
        log = self.profile.logs / "setup.log"
        self.profile.logs.mkdir(parents=True, exist_ok=True)
        run([str(VENV_PYTHON), "manage.py", "collectstatic", "--noinput"], log=log, env=env, cwd=ROOT)

    def up(self) -> None:
        if not VENV_PYTHON.exists():
            raise HerdError(f"no virtualenv at {VENV_PYTHON.parent.parent}: run `make up`, which creates it")
        self.start_services()
        self.prepare_database()
        worker = Worker(self.profile, self.database, self.extra_env)
        say(worker, "started" if worker.ensure() else "already running")
        # The replicas and HAProxy: a running HAProxy is told of added or removed
        # replicas through its runtime API, without a reload.
        self.scale(self.replica_count)
        print(f"\nHerd is up: open {self.profile.url}")
        print("  log in as demo or staff, password herd-demo-password; `make status` shows every process")

    def start_herd_processes(self) -> None:
        """The app replicas and HAProxy (the services must be up)."""
        self.collect_static()
        for web in self.webs():
            web.ensure()
        self.haproxy().ensure()

    def start(self, name: str) -> None:
        for process in self.processes():
            if process.name == name:
                say(process, "started" if process.ensure() else "already running")
                if isinstance(process, Web):
                    self.back_in_rotation(process)
                return
        raise HerdError(f"no process named {name!r}; `status` lists them")

    # ----------------------------------------------------------- restarts and scaling

    def back_in_rotation(self, web: Web) -> None:
        """Undo a drain left by an interrupted restart or scale (HAProxy keeps admin states)."""
        lb = self.haproxy()
        if lb.healthy() and lb.state(web.name).startswith(("DRAIN", "MAINT")):
            lb.runtime(f"set server replicas/{web.name} state ready")

    def drain(self, webs: list[Web], lb: HAProxy | None) -> None:
        """Take replicas out of service without failing a request; returns once they exited.

        Each is first set to ``drain`` on HAProxy's runtime API, so no new request goes to
        it from this instant on, however late its next health check comes on a busy
        machine; then SIGTERM: ``/readyz`` turns 503 (HAProxy marks it DOWN, as any load
        balancer that only sees the health check would), it serves what still reaches it
        for ``HERD_DRAIN_SECONDS``, then uvicorn finishes the requests in flight, closes
        WebSockets with 1012 and exits. Waits for HAProxy to report it DOWN (or MAINT) and
        for the process to be gone; SIGKILL after the graceful timeout.
        """
        balanced = lb is not None and lb.healthy()
        pids = {}
        for web in webs:
            if balanced and web.name in lb.server_states():
                lb.runtime(f"set server replicas/{web.name} state drain")
            pids[web.name] = web.pid()
            if pid_alive(pids[web.name]):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pids[web.name], signal.SIGTERM)

        def gone(web: Web) -> bool:
            exited = not pid_alive(pids[web.name])
            return exited and (not balanced or web.name not in lb.server_states() or lb.out_of_rotation(web.name))

        drain_seconds = float(self.profile.django_env()["HERD_DRAIN_SECONDS"])
        deadline = time.monotonic() + drain_seconds + GRACEFUL_TIMEOUT + 10
        while time.monotonic() < deadline and not all(gone(web) for web in webs):
            time.sleep(0.1)
        for web in webs:
            if pid_alive(pids[web.name]):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pids[web.name], signal.SIGKILL)
                say(web, "killed: it did not exit within its graceful timeout")
            web.pidfile.unlink(missing_ok=True)
        if not all(gone(web) for web in webs):
            raise HerdError(f"haproxy still sends requests to {', '.join(w.name for w in webs if not gone(w))}")

    def wait_in_rotation(self, lb: HAProxy, names: list[str], timeout: float = 30.0) -> None:
        wait_for(lambda: all(lb.state(name) == "UP" for name in names), timeout, f"{', '.join(names)} UP in haproxy")

    def rolling_restart(self) -> None:
        """Restart the app replicas one at a time; the others serve meanwhile.

        For each: drain it (``drain``), start it again, wait until HAProxy reports it UP,
        then the next. Capacity drops by one replica at most, and only for that time.
        """
        lb = self.haproxy()
        balanced = lb.healthy()
        for web in self.webs():
            self.drain([web], lb if balanced else None)
            say(web, "drained and stopped")
            web.start()
            if balanced:
                lb.runtime(f"set server replicas/{web.name} state ready")
                self.wait_in_rotation(lb, [web.name])
            say(web, "started again" + (", UP in haproxy" if balanced else ""))

    def scale(self, replicas: int) -> None:
        """Run ``replicas`` app replicas behind HAProxy, adding or removing them while serving.

        Added replicas are started, wait for ``/readyz``, then join the running HAProxy
        through its runtime API (``add server``, ``enable health``, ``enable server``).
        Extra replicas are drained (``drain``) and then deleted from it (``set server ...
        state maint``, ``del server``). The rendered configuration on disk is rewritten
        either way, so a later start of HAProxy keeps the new set. No reload: HAProxy
        started without ``-x`` (socket transfer) may reset connections that arrive while
        the old process closes its listener, and a reload forgets each server's health.
        When HAProxy runs a configuration other than the one rendered for its current
        servers (the template changed), it is reloaded instead (``-sf``).
        """
        if replicas < 1:
            raise HerdError("the herd needs at least one app replica")
        target = HAProxy(self.profile, list(range(1, replicas + 1)))
        # New replicas start side by side (each takes seconds to import Django).
        starting = [web for web in target_webs(self, replicas) if not web.healthy()]
        for web in starting:
            web.launch()
        for web in starting:
            web.wait_ready()
            say(web, "started")
        known = sorted(int(name[3:]) for name in target.server_states() if name[3:].isdigit())
        runtime = (
            target.healthy()
            and bool(known)
            and target.config.exists()
            and target.config.read_text() == HAProxy(self.profile, known).render()
        )
        if runtime:
            for number in range(1, replicas + 1):
                if number not in known:
                    web = Web(self.profile, number, self.database, self.extra_env)
                    target.add_server(web)
                    say(web, "added to haproxy")
            target.write_config()
            self.wait_in_rotation(target, [f"web{n}" for n in range(1, replicas + 1)])
        else:
            say(target, "started" if target.ensure() else "already running")
        extra_numbers = {n for n in known if n > replicas} | {
            web.number for web in self.stray_webs_beyond(replicas) if web.running()
        }
        extras = [Web(self.profile, n, self.database, self.extra_env) for n in sorted(extra_numbers)]
        if extras:
            self.drain(extras, target if runtime else None)
            for web in extras:
                if runtime and web.name in target.server_states():
                    target.delete_server(web.name)
                say(web, "drained, stopped and removed from haproxy")
        self.replica_count = replicas
        (self.profile.state / "replicas").write_text(str(replicas))

    def down(self) -> None:
        processes = [*self.processes(), *self.stray_webs()]
        for process in reversed(processes):
            was_running = process.running()
            process.stop()
            if was_running:
                say(process, "stopped")

    def status(self) -> bool:
        """Print one line per process; True when every one is up."""
        lb_view = self.haproxy().server_states()
        all_up = True
        print(f"{'process':<18} {'state':<6} {'pid':>7}  {'port':>5}  detail")
        for process in [*self.processes(), *self.stray_webs()]:
            up = process.healthy()
            all_up &= up
            state = "up" if up else "down"
            extra = f"; load balancer sees {lb_view[process.name]}" if process.name in lb_view else ""
            pid = process.pid() if process.running() else None
            print(f"{process.name:<18} {state:<6} {pid or '-':>7}  {process.port or '-':>5}  {process.detail}{extra}")
        return all_up


def target_webs(herd: Herd, replicas: int) -> list[Web]:
    return [Web(herd.profile, n, herd.database, herd.extra_env) for n in range(1, replicas + 1)]


def say(process: Process, what: str) -> None:
    print(f"  {process.name:<18} {what}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default=os.environ.get("HERD_PROFILE", "local"))
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="bring the herd up (idempotent)")
    up.add_argument("--replicas", type=int, default=None, help="app replicas (default 3, or as last time)")
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
    args = parser.parse_args(argv)

    profile = PROFILES[args.profile]
    herd = Herd(profile, args.replicas if args.command == "up" else None)
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
            return run_tests(args.pytest_args)
    except HerdError as error:
        print(f"herd: {error}", file=sys.stderr)
        return 1
    return 0


def run_tests(pytest_args: list[str]) -> int:
    """Start the test profile's services, run pytest against them, stop them."""
    herd = Herd(PROFILES["test"], replicas=0)
    try:
        # The browser tests drive Debian's Chromium (Playwright cannot download one here).
        ensure_packages(extra={"/usr/bin/chromium": "chromium"})
        herd.start_services()
        env = {**os.environ, **herd.profile.django_env()}
        return subprocess.run([str(VENV_PYTHON), "-m", "pytest", *pytest_args], cwd=ROOT, env=env).returncode
    finally:
        herd.down()


if __name__ == "__main__":
    sys.exit(main())
