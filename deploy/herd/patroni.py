"""PostgreSQL as a Patroni cluster (opt-in: ``python3 -m deploy.herd up --postgres patroni``).

Three etcd members on the profile's loopback ports (the consensus store survives one of them),
two Patroni members, each a PostgreSQL server and its REST API on ports of its own, run as the
``postgres`` user like the plain recipe (deploy/herd/services.py), and an HAProxy of their own
with two listeners: the primary (the member whose ``GET /primary`` answers 200) and the
replicas (``GET /replica?lag=...``; the primary when no replica is up). The app's
``DATABASE_URL`` and replica URLs name those listeners (``Profile.postgres_ports``).
``synchronous_mode``: a commit is acknowledged once the standby has it, so it survives the
primary's loss; ``use_pg_rewind``: a lost primary started again rejoins as a replica.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from deploy.herd.debian import postgres_bindir
from deploy.herd.processes import (
    HerdError,
    Process,
    pid_alive,
    port_open,
    read_pid,
    run,
    spawn,
    terminate,
    wait_for,
)
from deploy.herd.profiles import (
    ETCD_CLIENT_PORTS,
    ETCD_PEER_PORTS,
    IS_ROOT,
    PATRONI_POSTGRES_PORTS,
    PATRONI_REST_PORTS,
    VENV_PYTHON,
    Profile,
    shard_names,
)
from deploy.herd.services import as_user, own

MEMBERS = len(PATRONI_POSTGRES_PORTS)
# A replica further behind than this takes no reads (HAProxy's check of /replica).
REPLICA_MAX_LAG = "16MB"
# Patroni's floor: the leader key outlives a dead primary this long (the failover's bound).
TTL = 20
LOOP_WAIT = 1
RETRY_TIMEOUT = 5


def rest(
    port: int, path: str, timeout: float = 2.0, method: str = "GET", body: dict | None = None
) -> tuple[int | None, dict]:
    """A Patroni REST API answer: its status (None when it does not answer) and its JSON
    ({} when the body is none or text, as ``POST /restart`` answers). ``body``: sent as JSON
    (a ``PATCH /config``, a ``POST /restart``)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http on loopback)
            return response.status, json_or_empty(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json_or_empty(error.read())
    except (urllib.error.URLError, OSError):
        return None, {}


def json_or_empty(body: bytes) -> dict:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Etcd(Process):
    """Member ``number`` (1 to 3) of the profile's etcd cluster, on loopback."""

    own_group = True

    def __init__(self, profile: Profile, number: int) -> None:
        super().__init__(profile)
        self.number = number
        self.name = f"etcd{number}"
        self.port = profile.port(ETCD_CLIENT_PORTS[number - 1])
        self.peer_port = profile.port(ETCD_PEER_PORTS[number - 1])
        self.data = profile.state / "etcd" / self.name
        self.detail = f"etcd member {number} of {len(ETCD_CLIENT_PORTS)} (Patroni's consensus store)"

    def command(self) -> list[str]:
        cluster = ",".join(
            f"etcd{n}=http://127.0.0.1:{self.profile.port(port)}" for n, port in enumerate(ETCD_PEER_PORTS, 1)
        )
        return [
            "etcd",
            f"--name={self.name}",
            f"--data-dir={self.data}",
            f"--listen-client-urls=http://127.0.0.1:{self.port}",
            f"--advertise-client-urls=http://127.0.0.1:{self.port}",
            f"--listen-peer-urls=http://127.0.0.1:{self.peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{self.peer_port}",
            f"--initial-cluster={cluster}",
            f"--initial-cluster-token=herd-{self.profile.name}",
            "--initial-cluster-state=new",
            # A shared, busy machine: a slow heartbeat is not a dead leader.
            "--heartbeat-interval=200",
            "--election-timeout=2000",
            "--listen-metrics-urls=",
        ]

    def launch(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        spawn(self, self.command(), env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def start(self) -> None:
        self.launch()
        wait_for(self.serving, 30, self.name, self.log)

    def serving(self) -> bool:
        status, body = rest(self.port, "/health")
        return status == 200 and body.get("health") == "true"


def patroni_command() -> tuple[list[str], dict[str, str]]:
    """How the ``postgres`` user runs Patroni: the virtualenv's Python when it can reach it;
    as root with the virtualenv under a home only root may enter, the system's Python of the
    same version with the virtualenv's packages on its path."""
    if not IS_ROOT or (os.access(VENV_PYTHON, os.X_OK) and readable_by_others(VENV_PYTHON.resolve())):
        return [str(VENV_PYTHON), "-m", "patroni"], {}
    version = subprocess.run(
        [str(VENV_PYTHON), "-c", "import sys, sysconfig; print(sys.version_info[1], sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    system_python = Path(f"/usr/bin/python3.{version[0]}")
    if not system_python.exists():
        raise HerdError(f"the postgres user cannot run {VENV_PYTHON} and there is no {system_python}")
    return [str(system_python), "-m", "patroni"], {"PYTHONPATH": version[1]}


def readable_by_others(path: Path) -> bool:
    return all(folder.stat().st_mode & 0o001 for folder in path.parents) and bool(path.stat().st_mode & 0o005)


class PatroniMember(Process):
    """Member ``number`` of the Patroni cluster: Patroni, which runs its PostgreSQL server.

    ``pid()`` is Patroni's (its session: ``runuser`` and Patroni); Patroni starts the
    postmaster in a session of its own, so that one outlives Patroni (``postmaster_pid``)."""

    own_group = True

    def __init__(self, profile: Profile, number: int) -> None:
        super().__init__(profile)
        self.number = number
        self.name = f"patroni{number}"
        self.member = f"pg{number}"
        self.port = profile.port(PATRONI_POSTGRES_PORTS[number - 1])
        self.rest_port = profile.port(PATRONI_REST_PORTS[number - 1])
        self.folder = profile.service_state / "patroni"
        self.data = self.folder / self.member
        self.config = self.folder / f"{self.member}.yml"

    @property
    def detail(self) -> str:
        role = self.role() or "no answer"
        return f"Patroni {self.member} ({role}), PostgreSQL :{self.port}, REST :{self.rest_port}"

    def settings(self) -> dict:
        parameters = {
            "max_connections": 300,
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "wal_level": "replica",
            "hot_standby": "on",
            "hot_standby_feedback": "on",
            "wal_keep_size": "256MB",
            "shared_preload_libraries": "pg_stat_statements",
            # A commit waits for the synchronous standby (synchronous_mode): it survives the primary.
            "synchronous_commit": "on",
        }
        if not self.profile.durable:
            parameters.update(fsync="off")
        peers = ",".join(f"127.0.0.1:{self.profile.port(port)}" for port in ETCD_CLIENT_PORTS)
        return {
            "scope": f"herd-{self.profile.name}",
            "namespace": "/herd/",
            "name": self.member,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{self.rest_port}",
                "connect_address": f"127.0.0.1:{self.rest_port}",
            },
            "etcd3": {"hosts": peers},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL,
                    "loop_wait": LOOP_WAIT,
                    "retry_timeout": RETRY_TIMEOUT,
                    "maximum_lag_on_failover": 16 * 1024 * 1024,
                    "synchronous_mode": True,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": parameters},
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, {"auth": "trust"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.port}",
                "connect_address": f"127.0.0.1:{self.port}",
                "data_dir": str(self.data),
                "bin_dir": str(postgres_bindir()),
                "pgpass": str(self.folder / f"{self.member}.pgpass"),
                "authentication": {
                    # Trusted on loopback (pg_hba below): the passwords are never checked.
                    "superuser": {"username": "herd", "password": "herd"},
                    "replication": {"username": "replicator", "password": "replicator"},
                    "rewind": {"username": "herd", "password": "herd"},
                },
                "parameters": {"unix_socket_directories": ""},
                "pg_hba": [
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ],
                "remove_data_directory_on_rewind_failure": True,
                "remove_data_directory_on_diverged_timelines": True,
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }

    def launch(self) -> None:
        own(self.folder, "postgres")
        self.config.write_text(json.dumps(self.settings(), indent=2))  # JSON is YAML
        if IS_ROOT:
            shutil.chown(self.config, "postgres", "postgres")
        command, extra = patroni_command()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", **extra}
        spawn(
            self, [*as_user("postgres"), "env", *(f"{k}={v}" for k, v in env.items()), *command, str(self.config)], env
        )

    def start(self) -> None:
        self.launch()
        wait_for(lambda: self.role() is not None, 60, self.name, self.log)

    def healthy(self) -> bool:
        return self.running() and self.role() in ("primary", "replica")

    def state(self) -> dict:
        return rest(self.rest_port, "/patroni")[1]

    def role(self) -> str | None:
        """``primary`` or ``replica`` while its PostgreSQL runs in that role; None otherwise."""
        state = self.state()
        if state.get("state") != "running":
            return None
        return {"master": "primary", "primary": "primary", "replica": "replica", "standby_leader": "replica"}.get(
            state.get("role", "")
        )

    def is_primary(self) -> bool:
        return rest(self.rest_port, "/primary")[0] == 200

    def is_sync_standby(self) -> bool:
        return rest(self.rest_port, "/sync")[0] == 200

    def timeline(self) -> int | None:
        return self.state().get("timeline")

    def postmaster_pid(self) -> int | None:
        return read_pid(self.data / "postmaster.pid")

    def paused(self) -> bool:
        """Whether this member's Patroni runs in maintenance mode (``pause``: no failover)."""
        return bool(self.state().get("pause"))

    def stop_postgres(self) -> None:
        """Its PostgreSQL server stopped (fast shutdown), Patroni left running: only while the
        cluster is paused, or Patroni starts it again at once (and, for the primary, first
        gives up the leader key it holds: under ``pause`` no other member takes it)."""
        run(
            [*as_user("postgres"), str(postgres_bindir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            log=self.log,
        )

    def start_postgres(self, timeout: float = 60) -> None:
        """Its PostgreSQL server started again by its Patroni (``POST /restart``, which Patroni
        allows while paused), in the role it had; waits until it runs in it."""
        status, _ = rest(self.rest_port, "/restart", timeout=timeout, method="POST", body={})
        if status != 200:
            raise HerdError(f"{self.name}: POST /restart answered {status}")
        wait_for(lambda: self.role() is not None, timeout, f"{self.name}'s PostgreSQL", self.log)

    def kill(self) -> None:
        """SIGKILL Patroni and its PostgreSQL server at once: the member's machine lost."""
        postmaster = self.postmaster_pid()
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.killpg(self.pid(), signal.SIGKILL)
        if pid_alive(postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGKILL)
        wait_for(lambda: not pid_alive(self.pid()) and not pid_alive(postmaster), 10, f"{self.name} killed")

    def stop(self) -> None:
        # Patroni stops its PostgreSQL (fast shutdown) on SIGTERM; a postmaster left by a
        # killed Patroni is stopped here.
        super().stop()
        postmaster = self.postmaster_pid()
        if pid_alive(postmaster):
            terminate(postmaster, group=False)


HAPROXY_CONFIG = """# Written by deploy/herd/patroni.py: the app's way to the Patroni primary and replicas.
global
    maxconn 2000

defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 2s
    # A refused connect (a member just killed, not yet marked down) fails the client's at
    # once: HAProxy's retries wait a second each, and the app's health checks give up sooner.
    retries 0
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 1

# With no server up, a connection is closed at once, as a stopped server refuses one: held
# in the queue instead, every connect of the app (its health checks too) would wait.
frontend postgres_primary
    bind 127.0.0.1:{primary_port}
    tcp-request connection reject if {{ nbsrv(primary) eq 0 }}
    default_backend primary

# Replicas first; with none up, any member that serves reads (the primary): the replicas
# backend's backup servers, each following a check of its own (backend readable): a standby
# being promoted passes it throughout, where it leaves the replicas before the primary
# listener has it (a second in which reads had nowhere to go).
frontend postgres_replicas
    bind 127.0.0.1:{replica_port}
    tcp-request connection reject if {{ nbsrv(replicas) eq 0 }}
    default_backend replicas

backend primary
    option httpchk GET /primary
    http-check expect status 200
    # Patroni answers 200 from the instant it holds the leader key, a second before its
    # server leaves recovery: writes sent then fail as read-only. Its role says when.
    http-check expect rstring role.{{1,4}}primary
    # A primary that turns down (lost, demoted) loses its sessions at once: the app
    # reconnects to the new one instead of writing into a dead socket or a standby.
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 1 on-marked-down shutdown-sessions
{primary_servers}

# Checks only, no traffic: the replicas backend's backup servers track them.
backend readable
    option httpchk GET /read-only?lag={lag}
    http-check expect status 200
{replica_servers}

backend replicas
    balance roundrobin
    # No shutdown-sessions when a replica goes down: one out of this backend because it was
    # promoted still answers its readers correctly (the app's own checks take out a lagging
    # one); cutting them at the instant of promotion failed reads that had just moved to it.
    # When a replica comes (back) up, the sessions on the fallback are cut: the app's
    # connections, its kept health-check one included, would otherwise stay on the primary
    # for good, and a replica that lags would never be seen lagging.
    option httpchk GET /replica?lag={lag}
    http-check expect status 200
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 1 on-marked-up shutdown-backup-sessions
{replica_servers}
{fallback_servers}
"""


class PostgresProxy(Process):
    """HAProxy's two PostgreSQL listeners, each member checked on its Patroni REST API."""

    name = "haproxy-postgres"
    detail = "PostgreSQL primary and replicas by Patroni's REST API"

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.port, self.replica_port = profile.postgres_ports
        self.config = profile.state / "haproxy-postgres.cfg"

    def render(self, primary_check: str = "/primary") -> str:
        members = [PatroniMember(self.profile, n) for n in range(1, MEMBERS + 1)]
        servers = "\n".join(f"    server {m.member} 127.0.0.1:{m.port} check port {m.rest_port}" for m in members)
        return HAPROXY_CONFIG.format(
            primary_port=self.port,
            replica_port=self.replica_port,
            lag=REPLICA_MAX_LAG,
            primary_servers=servers,
            replica_servers=servers,
            fallback_servers="\n".join(
                f"    server {m.member}-any 127.0.0.1:{m.port} backup track readable/{m.member}" for m in members
            ),
        ).replace("GET /primary", f"GET {primary_check}")

    def ensure(self, primary_check: str = "/primary") -> bool:
        """Start, or reload when its configuration changed (seamless: ``-sf``)."""
        config = self.render(primary_check)
        if self.healthy() and self.config.exists() and self.config.read_text() == config:
            return False
        self.profile.run.mkdir(parents=True, exist_ok=True)
        self.profile.logs.mkdir(parents=True, exist_ok=True)
        self.config.write_text(config)
        run(["haproxy", "-c", "-q", "-f", str(self.config)], log=self.log)
        reload = ["-sf", str(self.pid())] if self.healthy() else []
        run(["haproxy", "-D", "-f", str(self.config), "-p", str(self.pidfile), *reload], log=self.log)
        wait_for(lambda: port_open(self.port) and port_open(self.replica_port), 10, self.name, self.log)
        return True

    start = ensure


class PatroniCluster:
    """Every process of the profile's Patroni cluster, in the order they start."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.etcds = [Etcd(profile, n) for n in range(1, len(ETCD_CLIENT_PORTS) + 1)]
        self.members = [PatroniMember(profile, n) for n in range(1, MEMBERS + 1)]
        self.proxy = PostgresProxy(profile)

    def processes(self) -> list[Process]:
        return [*self.etcds, *self.members, self.proxy]

    def ensure(self, say=None) -> None:
        """Up and ready: etcd with a quorum, a primary, its synchronous standby, HAProxy
        routing to them, the app's databases created."""
        say = say or (lambda process, what: None)
        starting = [etcd for etcd in self.etcds if not etcd.healthy()]
        for etcd in starting:  # together: a member waits for a quorum to serve
            etcd.launch()
        for etcd in self.etcds:
            wait_for(etcd.serving, 60, etcd.name, etcd.log)
            say(etcd, "started" if etcd in starting else "already running")
        for member in self.members:
            was = member.healthy()
            if not was:
                if not member.running():
                    member.launch()
                wait_for(lambda m=member: m.role() is not None, 120, member.name, member.log)
            say(member, f"{'already running' if was else 'started'}, {member.role()}")
        say(self.proxy, "started" if self.proxy.ensure() else "already running")
        self.wait_ready(120)
        for name in ("herd", *shard_names("herd")):
            self.create_database(name)

    def primary(self) -> PatroniMember | None:
        return next((member for member in self.members if member.is_primary()), None)

    def replicas(self) -> list[PatroniMember]:
        return [member for member in self.members if member.role() == "replica"]

    def configure(self, change: dict) -> dict:
        """The cluster's dynamic configuration (etcd's, every member's) patched with ``change``
        through Patroni's ``PATCH /config`` (a key set to None is removed); the result."""
        for member in self.members:
            status, config = rest(member.rest_port, "/config", timeout=5, method="PATCH", body=change)
            if status == 200:
                return config
        raise HerdError(f"no Patroni member took PATCH /config {change}")

    def pause(self, paused: bool = True, timeout: float = 15) -> None:
        """Maintenance mode on (``patronictl pause``) or off: while paused Patroni fails nothing
        over, starts no stopped server, and a primary whose server stopped gives up the leader
        key. Returns once every running member says so."""
        self.configure({"pause": paused})

        def everyone() -> bool:
            running = [member for member in self.members if member.running()]
            return bool(running) and all(member.paused() == paused for member in running)

        wait_for(everyone, timeout, f"every Patroni member {'paused' if paused else 'resumed'}", self.members[0].log)

    def resume(self, timeout: float = 15) -> None:
        self.pause(False, timeout)

    def synchronous_standby(self) -> PatroniMember | None:
        """The member the primary streams to synchronously now (its ``pg_stat_replication``, as
        its Patroni reports it): the one a failover may promote. Etcd's record of it (``/sync``)
        may outlive a standby that has not yet followed a new primary."""
        primary = self.primary()
        if primary is None:
            return None
        for row in primary.state().get("replication", []):
            if row.get("state") == "streaming" and row.get("sync_state") in ("sync", "quorum"):
                member = next((m for m in self.members if m.member == row.get("application_name")), None)
                if member is not None and member.is_sync_standby():
                    return member
        return None

    def wait_ready(self, timeout: float) -> None:
        """A primary, a streaming synchronous standby, and HAProxy routing writes to it only:
        a HAProxy just started takes every server for up until its checks say otherwise, and
        balances connections round robin, so several in a row must all reach the primary."""

        def ready() -> bool:
            return self.synchronous_standby() is not None and all(
                self.psql_value("SELECT NOT pg_is_in_recovery()", port=self.proxy.port) == "t"
                for _ in range(2 * MEMBERS)
            )

        wait_for(ready, timeout, "the Patroni cluster (a primary and its synchronous standby)", self.members[0].log)

    def psql_value(self, query: str, port: int | None = None, database: str = "postgres") -> str | None:
        command = [
            str(postgres_bindir() / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port or self.proxy.port),
            "-U",
            "herd",
            "-d",
            database,
            "-tAc",
            query,
        ]
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PGCONNECT_TIMEOUT": "3"})
        return result.stdout.strip() if result.returncode == 0 else None

    def create_database(self, name: str) -> None:
        exists = self.psql_value(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")  # noqa: S608 (our names)
        if exists != "1":
            run(
                [
                    str(postgres_bindir() / "psql"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.proxy.port),
                    "-U",
                    "herd",
                    "-d",
                    "postgres",
                    "-c",
                    f'CREATE DATABASE "{name}"',
                ],
                log=self.profile.logs / "patroni-setup.log",
            )

    def stop(self, say=None) -> None:
        say = say or (lambda process, what: None)
        for process in reversed(self.processes()):
            was_running = process.running()
            process.stop()
            if was_running:
                say(process, "stopped")

    def wipe(self) -> None:
        """Every member's data and etcd's: the next ``ensure`` bootstraps a new cluster."""
        self.stop()
        for folder in (self.members[0].folder, self.profile.state / "etcd"):
            shutil.rmtree(folder, ignore_errors=True)


def elapsed_until(predicate, timeout: float, interval: float = 0.1) -> float | None:
    """Seconds until ``predicate()`` held (polled), or None if not within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    return None
