"""The data services of a herd, each a private server on the profile's ports: the PostgreSQL
primary and its streaming replica, the two Redis instances (state, cache), the RabbitMQ node.

As root, PostgreSQL and RabbitMQ run as their Debian users (PostgreSQL refuses root) and
keep their data in ``Profile.service_state``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from deploy.herd.debian import postgres_bindir
from deploy.herd.processes import Process, pid_alive, port_open, read_pid, run, terminate, wait_for
from deploy.herd.profiles import (
    IS_ROOT,
    POSTGRES_PORT,
    POSTGRES_REPLICA_PORT,
    RABBITMQ_DIST_PORT,
    RABBITMQ_PORT,
    REDIS_CACHE_PORT,
    REDIS_STATE_2_PORT,
    REDIS_STATE_PORT,
    SENTINEL_MASTER,
    SENTINEL_PORTS,
    Profile,
    shard_names,
)


def as_user(user: str) -> list[str]:
    """Prefix that runs a command as ``user`` when we are root (PostgreSQL refuses root)."""
    return ["runuser", "-u", user, "--"] if IS_ROOT else []


def own(path: Path, user: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if IS_ROOT:
        shutil.chown(path, user, user)


class Postgres(Process):
    """A private PostgreSQL server: the primary, or a streaming replica of it."""

    def __init__(self, profile: Profile, replica: bool) -> None:
        super().__init__(profile)
        self.replica = replica
        self.name = "postgres-replica" if replica else "postgres-primary"
        self.port = profile.port(POSTGRES_REPLICA_PORT if replica else POSTGRES_PORT)
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
            conf.write("\n# deploy/herd/services.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        (self.data / "pg_hba.conf").write_text(
            "# deploy/herd/services.py: loopback only, trusted (a private development cluster)\n"
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
    """A private Redis: ``state`` (sessions, socket groups) or ``cache``. Under Sentinel
    (``Profile.sentinel``) the state Redis is two nodes, ``redis-state`` and
    ``redis-state-2`` (``node=2``, first started as the other's replica), each started from
    a config file written once and then kept up to date by the Sentinels (``REPLICAOF`` and
    ``CONFIG REWRITE`` on a failover), so a restart keeps whichever role it had last."""

    def __init__(self, profile: Profile, role: str, node: int = 1) -> None:
        super().__init__(profile)
        self.role = role
        self.node = node
        self.name = f"redis-{role}" if node == 1 else f"redis-{role}-{node}"
        base = REDIS_CACHE_PORT if role == "cache" else REDIS_STATE_PORT if node == 1 else REDIS_STATE_2_PORT
        self.port = profile.port(base)

    def start(self) -> None:
        data = self.profile.state / self.name
        data.mkdir(parents=True, exist_ok=True)
        self.profile.logs.mkdir(parents=True, exist_ok=True)
        self.profile.run.mkdir(parents=True, exist_ok=True)
        settings = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "daemonize": "yes",
            "pidfile": str(self.pidfile),
            "logfile": str(self.log),
            "dir": str(data),
            "save": '""',
        }
        if self.role == "state":
            # Sessions and socket groups: never evicted, and an append-only file so a
            # restart logs nobody out.
            settings |= {"maxmemory-policy": "noeviction", "appendonly": "yes", "appendfsync": "everysec"}
        else:
            # The cache: entries have a time to live and are evicted; the versions that
            # guard them have none and never are (scaling.cache).
            settings |= {"maxmemory": "256mb", "maxmemory-policy": "volatile-lru", "appendonly": "no"}
        if self.role == "state" and self.profile.sentinel:
            # A replica (re)joining gets its full copy at once, not after Redis's 5 s wait for
            # others to share it: until it has one, every session save waits for it in vain.
            settings["repl-diskless-sync-delay"] = "0"
            conf = data / "redis.conf"
            if not conf.exists():  # afterwards the Sentinels' to keep
                if self.node != 1:
                    settings["replicaof"] = f"127.0.0.1 {self.profile.port(REDIS_STATE_PORT)}"
                conf.write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
            run(["redis-server", str(conf)], log=self.log)
        else:
            args = [arg for key, value in settings.items() for arg in (f"--{key}", value.strip('"'))]
            run(["redis-server", *args], log=self.log)
        wait_for(lambda: port_open(self.port), 10, self.name, self.log)

    @property
    def detail(self) -> str:
        if self.role == "cache":
            return "cache (volatile-lru)"
        what = "sessions, socket groups (noeviction, AOF)"
        return f"{what}, {redis_role(self.port)}" if self.profile.sentinel else what


def redis_role(port: int) -> str:
    """What the Redis on ``port`` says it is now: ``master`` or ``replica of :PORT``."""
    try:
        output = subprocess.run(
            ["redis-cli", "-p", str(port), "ROLE"], capture_output=True, text=True, timeout=2, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "not answering"
    if not output:
        return "not answering"
    return "master" if output[0] == "master" else f"replica of :{output[2]}" if len(output) > 2 else output[0]


class Sentinel(Process):
    """One of the three Sentinels that watch the state Redis and fail it over (quorum 2)."""

    # How long a node may not answer before a Sentinel thinks it down, and how long a
    # failover may take before another is tried (docs/RELIABILITY.md).
    DOWN_AFTER_MS = 2000
    FAILOVER_TIMEOUT_MS = 10000

    def __init__(self, profile: Profile, number: int) -> None:
        super().__init__(profile)
        self.number = number
        self.name = f"sentinel-{number}"
        self.port = profile.port(SENTINEL_PORTS[number - 1])
        self.detail = f"watches {SENTINEL_MASTER}, quorum 2"

    def start(self) -> None:
        data = self.profile.state / self.name
        data.mkdir(parents=True, exist_ok=True)
        self.profile.logs.mkdir(parents=True, exist_ok=True)
        self.profile.run.mkdir(parents=True, exist_ok=True)
        conf = data / "sentinel.conf"
        if not conf.exists():  # afterwards the Sentinel's own to rewrite
            master = self.profile.port(REDIS_STATE_PORT)
            conf.write_text(
                f"bind 127.0.0.1\nport {self.port}\ndaemonize yes\npidfile {self.pidfile}\n"
                f"logfile {self.log}\ndir {data}\n"
                f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_MASTER} {self.DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SENTINEL_MASTER} {self.FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
            )
        run(["redis-server", str(conf), "--sentinel"], log=self.log)
        wait_for(lambda: port_open(self.port), 10, self.name, self.log)


def state_redis(profile: Profile) -> list[Process]:
    """The state Redis's processes: one node, or two and their Sentinels."""
    if not profile.sentinel:
        return [Redis(profile, "state")]
    return [Redis(profile, "state"), Redis(profile, "state", node=2), *(Sentinel(profile, n) for n in (1, 2, 3))]


class RabbitMQ(Process):
    """A private RabbitMQ node: the Dramatiq broker."""

    name = "rabbitmq"
    detail = "Dramatiq broker"

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.port = profile.port(RABBITMQ_PORT)
        self.home = profile.service_state / "rabbitmq"
        self.node = f"herd-{profile.name}@localhost"

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.profile.port(RABBITMQ_DIST_PORT)),
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
