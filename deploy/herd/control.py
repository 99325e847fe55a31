"""``Herd``: every process of one profile, brought up, restarted, scaled and stopped.

Services first, then the database, the worker, the app replicas and HAProxy. Restarts and
scaling never fail a request: a replica leaves HAProxy's rotation (drained) before it stops,
and joins it (UP) before the next one goes.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import time
from pathlib import Path

from deploy.herd.app import Web, Worker
from deploy.herd.debian import ensure_packages
from deploy.herd.haproxy import HAProxy
from deploy.herd.patroni import PatroniCluster
from deploy.herd.processes import HerdError, Process, pid_alive, run, wait_for
from deploy.herd.profiles import ROOT, VENV_PYTHON, Profile, reserve_ports, shard_names
from deploy.herd.services import Postgres, RabbitMQ, Redis, state_redis

# Seconds a stopping replica gives requests in flight (``manage.py serve --graceful-timeout``).
GRACEFUL_TIMEOUT = 20.0


class Herd:
    """Every process of one profile. ``database`` names the database the apps use."""

    def __init__(
        self,
        profile: Profile,
        replicas: int | None = None,
        database: str = "herd",
        extra_env: dict | None = None,
        postgres: str | None = None,
    ) -> None:
        # PostgreSQL as ``postgres`` says (plain, patroni), else as the herd last ran it.
        self.profile = profile.with_postgres(postgres or ("patroni" if profile.patroni else recorded_postgres(profile)))
        self.database = database
        self.extra_env = extra_env or {}
        self.replica_count = replicas if replicas is not None else self.recorded_replicas()

    def recorded_replicas(self) -> int:
        try:
            return int((self.profile.state / "replicas").read_text())
        except (OSError, ValueError):
            return 3

    def postgres_processes(self) -> list[Process]:
        if self.profile.patroni:
            return PatroniCluster(self.profile).processes()
        return [Postgres(self.profile, replica=False), Postgres(self.profile, replica=True)]

    def services(self) -> list[Process]:
        p = self.profile
        return [
            *self.postgres_processes(),
            *state_redis(p),
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
        reserve_ports(self.replica_count)
        ensure_packages()
        # WhiteNoise expects the static folder to exist even before collectstatic.
        (self.profile.state / "static").mkdir(parents=True, exist_ok=True)
        # The other kind of PostgreSQL, left by an earlier run, stops: one source of truth.
        other = Herd(self.profile, 0, postgres="plain" if self.profile.patroni else "patroni")
        for process in reversed(other.postgres_processes()):
            if process.running():
                process.stop()
                say(process, "stopped (PostgreSQL now runs as " + self.profile.postgres_kind + ")")
        self.profile.state.mkdir(parents=True, exist_ok=True)
        (self.profile.state / "postgres").write_text(self.profile.postgres_kind)
        postgres = {process.name for process in self.postgres_processes()}
        if self.profile.patroni:
            ensure_packages(extra={"/usr/bin/etcd": "etcd-server"})
            PatroniCluster(self.profile).ensure(say)
        for process in self.services():
            if not (self.profile.patroni and process.name in postgres):
                say(process, "started" if process.ensure() else "already running")

    def prepare_database(self) -> None:
        env = {"PATH": os.environ.get("PATH", ""), **self.profile.django_env()}
        log = self.profile.logs / "setup.log"
        # A primary first started before sharding has no shard databases yet.
        primary = PatroniCluster(self.profile) if self.profile.patroni else Postgres(self.profile, replica=False)
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
        reserve_ports(self.replica_count)
        self.collect_static()
        for web in self.webs():
            web.ensure()
        self.haproxy().ensure()

    def start(self, name: str) -> None:
        reserve_ports(self.replica_count)
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
        reserve_ports(replicas)
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


def recorded_postgres(profile: Profile) -> str:
    """How the profile's herd last ran PostgreSQL (``plain`` unless it was ``patroni``)."""
    try:
        return (profile.state / "postgres").read_text().strip() or "plain"
    except OSError:
        return "plain"


def target_webs(herd: Herd, replicas: int) -> list[Web]:
    return [Web(herd.profile, n, herd.database, herd.extra_env) for n in range(1, replicas + 1)]


def say(process: Process, what: str) -> None:
    print(f"  {process.name:<18} {what}", flush=True)
