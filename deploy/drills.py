#!/usr/bin/env python3
"""Fault drills: break one piece of the herd under a steady load and count the damage.

    .venv/bin/python -m deploy.drills [--short] [--postgres patroni|plain] [DRILL ...]
                                          (``make drills``; every drill by default)

Each drill runs the load of ``deploy/load.py`` through HAProxy (logged-in shoppers who
read pages, check their session and post reviews; anonymous visitors reading the
catalog past the edge cache), injects its fault at a fixed point, recovers, and then
verifies: every review acknowledged with a 302 must be in the primary, every shopper
must still be logged in, no replica may have crashed. It prints one Markdown row per
drill: requests sent, failed (idempotent / writes), writes acknowledged, writes
found, sessions lost, and a verdict against the target (no failed idempotent request,
no lost acknowledged write, no 500), minus the failures the drill's design expects
(each drill says which and why). A full run of every drill writes the table and each
drill's notes between ``<!-- drills:begin -->`` and ``<!-- drills:end -->`` in
docs/RELIABILITY.md, with the date, the commit and the tier; a run of some drills merges
its rows and notes into that block (each row says the date and commit of its run,
``merge``); ``--short`` and ``--postgres plain`` only print.

Runs on a herd of its own, the ``drills`` profile (ports offset by 300, state in
``.herd/drills``): three app replicas, a worker, HAProxy, which reach each data service
through a fault proxy of this process (``deploy/faults.py``; the ``ServiceFault`` drills
switch one), but the state Redis: two nodes under three Sentinels, found through them.
Its PostgreSQL is the HA tier by default, a Patroni cluster (``deploy/herd/patroni.py``;
the app's proxies stand in front of HAProxy's primary and replica listeners), where every
drill runs; ``--postgres plain`` runs the plain primary and streaming replica instead,
without the drills that need Patroni, and only prints. The drills that act on "the
replica" or "the primary" act on whichever Patroni member holds that role when they
start. ``make drills`` stops the herd afterwards. The test suite runs the drills in their
short form on the test herd, plain tier (``deploy/tests/test_drills.py``, but those in its
``NOT_IN_SUITE``) through ``run_drill``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import redis
from websockets.exceptions import InvalidHandshake
from websockets.sync.client import connect

from deploy.doc_blocks import provenance, replace_block
from deploy.faults import Faults
from deploy.herd.app import Web, Worker
from deploy.herd.control import Herd
from deploy.herd.patroni import LOOP_WAIT, TTL, PatroniCluster, elapsed_until
from deploy.herd.processes import HerdError, pid_alive, run, wait_for
from deploy.herd.profiles import PROFILES, SENTINEL_MASTER, SENTINEL_PORTS, VENV_PYTHON, Profile, sentinel_profile
from deploy.herd.services import Postgres, RabbitMQ, Redis, Sentinel
from deploy.load import Failure, Load, LoadReport
from deploy.visitor import Visitor

ROOT = Path(__file__).resolve().parent.parent

PASSWORD = "drills-password-1234"  # noqa: S105 (the drill accounts of a private herd)
SHOPPERS = 3
PRODUCTS_PER_SHOPPER = 400
# Products for the export the worker drill kills mid-way (``seed_catalog``, loaded once).
JOB_PRODUCTS = 100_000
# Replica health thresholds low enough for a few seconds of injected lag to cross both
# (the defaults are 30 s and 16 MB); the test herd runs with them too.
REPLICA_HEALTH_ENV = {
    "HERD_REPLICA_MAX_LAG_SECONDS": "1",
    "HERD_REPLICA_MAX_LAG_BYTES": "65536",
    "HERD_REPLICA_CHECK_INTERVAL": "1",
}
DRILL_ENV = {**REPLICA_HEALTH_ENV, "DJANGO_LOG_LEVEL": "WARNING"}
SESSION_DOWN_TEXT = "temporarily unavailable"
READ_ONLY_TEXT = "read-only for a moment"
REPORT = ROOT / "docs" / "RELIABILITY.md"
# How each ``--postgres`` runs PostgreSQL, as the block of a run says.
TIERS = {
    "patroni": "PostgreSQL under Patroni (three etcd members, two Patroni members, HAProxy's primary "
    "and replica listeners)",
    "plain": "PostgreSQL as a plain primary and streaming replica",
}
# Logins the state-Redis failover drill waits to see acknowledged before it kills the primary.
LOGINS_BEFORE_KILL = 3
BEGIN, END = "<!-- drills:begin -->", "<!-- drills:end -->"


@dataclass(frozen=True)
class Timing:
    warmup: float  # load before the fault
    hold: float  # how long a fault lasts before recovery
    settle: float  # load after recovery
    samples: int = 15  # timed page loads, where a drill measures pages


FULL = Timing(warmup=3.0, hold=5.0, settle=3.0)
# The suite's form: enough load around the fault to meet it, no more (each fault's own
# recovery, a replica or RabbitMQ starting again, takes longer than this anyway).
SHORT = Timing(warmup=0.5, hold=1.0, settle=0.5, samples=5)


@dataclass
class Rig:
    """What a drill acts on: the herd, its shoppers and the staff account."""

    herd: Herd
    shoppers: list[tuple[str, list[str]]]
    staff: str
    timing: Timing
    browsers: int = 2
    worker: Worker | None = None
    job_products: int = JOB_PRODUCTS
    faults: Faults | None = None  # the proxies the herd reaches its data services through
    notes: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.herd.profile.url

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"    {text}", flush=True)


@dataclass
class Result:
    drill: str
    report: LoadReport
    writes_found: int
    allowed: int  # failures the drill's design expects
    problems: list[str]
    notes: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems

    def row(self, run: str = "") -> str:
        """The table row; ``run``: the date and commit it was measured at."""
        r = self.report
        verdict = "pass" if self.passed else "FAIL: " + "; ".join(self.problems)
        if self.passed and self.allowed:
            verdict += f" ({self.allowed} designed failures)"
        return (
            f"| {self.drill} | {r.requests} | {r.idempotent_failed} / {r.writes_failed} | {len(r.saved_reviews)} "
            f"| {self.writes_found} | {r.sessions_lost} | {verdict} | {run} |"
        )


TABLE_HEADER = (
    "| drill | requests sent | failed (idempotent / writes) | writes acknowledged | writes found "
    "| sessions lost | verdict | run |\n|---|---:|---:|---:|---:|---:|---|---|"
)


# --------------------------------------------------------------------------- drills


class Drill:
    """A fault: ``setup`` loads what it needs before the load starts; ``fault`` injects it
    and recovers (the load runs meanwhile); ``designed`` says which failures the design
    expects while it lasts; ``verify`` adds checks."""

    name = ""
    restarts: tuple[str, ...] = ()  # replicas the drill itself restarts (new pids expected)
    needs_worker = False
    needs_patroni = False  # runs on the herd with PostgreSQL under Patroni (deploy/herd/patroni.py)
    # Needs the app to reach the state Redis through its fault proxy: at one fixed address,
    # not where Sentinels say (deploy/faults.py).
    needs_single_state_node = False
    # Needs the app to reach a state Redis under Sentinel (the suite then points it at one).
    needs_sentinel = False
    sessions_lost = 0  # sessions the drill saw lost itself, beside the load's

    def setup(self, rig: Rig) -> None:
        return None

    def fault(self, rig: Rig) -> None:
        raise NotImplementedError

    def designed(self, failure: Failure) -> bool:
        return False

    def verify(self, rig: Rig, problems: list[str]) -> None:
        return None


def wait_all_up(herd: Herd, timeout: float = 30.0) -> None:
    lb = herd.haproxy()
    names = [web.name for web in herd.webs()]
    wait_for(lambda: all(lb.state(name) == "UP" for name in names), timeout, "every replica UP in haproxy")


class ReplicaKill(Drill):
    """SIGKILL an app replica (no drain at all), then start it again."""

    name = "replica-sigkill"
    restarts = ("web2",)

    def fault(self, rig: Rig) -> None:
        web = Web(rig.herd.profile, 2)
        os.killpg(web.pid(), signal.SIGKILL)
        rig.note(f"web2 (pid {web.pid()}) SIGKILLed")
        time.sleep(rig.timing.hold)
        rig.herd.start("web2")
        wait_all_up(rig.herd)

    def designed(self, failure: Failure) -> bool:
        # A POST in flight on the killed replica: HAProxy may not resend it (it may have
        # been applied), so it answers 502 itself. The shopper gets no acknowledgement.
        return not failure.idempotent and failure.served_by is None and failure.status in (502, 503, 504, None)


class ReplicaStop(Drill):
    """Stop an app replica with SIGTERM (it drains itself: no runtime API), then start it."""

    name = "replica-stop"
    restarts = ("web2",)

    def fault(self, rig: Rig) -> None:
        lb = rig.herd.haproxy()
        pid = Web(rig.herd.profile, 2).pid()
        os.killpg(pid, signal.SIGTERM)
        # The drain is the mechanism: HAProxy must see web2 fail a check while it still serves.
        seen_out = ""
        deadline = time.monotonic() + 60
        while pid_alive(pid) and time.monotonic() < deadline:
            seen_out = seen_out or ("" if lb.state("web2") == "UP" else lb.state("web2"))
            time.sleep(0.05)
        rig.note(f"web2 SIGTERMed; haproxy saw it {seen_out or 'UP'} before it exited")
        time.sleep(rig.timing.hold)
        rig.herd.start("web2")
        wait_all_up(rig.herd)
        if not seen_out:
            raise DrillError("web2 exited while haproxy still had it UP: no drain")


class DatabaseReplicaStop(Drill):
    """Stop the PostgreSQL replica; reads move to the primary; start it again. Under Patroni
    the replica member, its Patroni and its server (Patroni would restart a server stopped
    alone): HAProxy's replica listener falls back to the primary meanwhile."""

    name = "db-replica-stop"

    def fault(self, rig: Rig) -> None:
        if not rig.herd.profile.patroni:
            replica = Postgres(rig.herd.profile, replica=True)
            replica.stop()
            rig.note("postgres-replica stopped (fast shutdown)")
            time.sleep(rig.timing.hold)
            replica.start()
            rig.note("postgres-replica started again")
            return
        cluster = PatroniCluster(rig.herd.profile)
        cluster.wait_ready(60)
        member = cluster.synchronous_standby()
        member.stop()
        rig.note(f"{member.member} (the replica, the synchronous standby) stopped: its Patroni and its PostgreSQL")
        time.sleep(rig.timing.hold)
        member.launch()
        took = elapsed_until(lambda: getattr(cluster.synchronous_standby(), "member", None) == member.member, 120)
        if took is None:
            raise DrillError(f"{member.member} was not the synchronous standby again within 120 s")
        rig.note(f"{member.member} started again: the synchronous standby {took:.1f} s later")


class DatabaseReplicaLag(Drill):
    """Delay the replica's replay past both health thresholds, then let it catch up."""

    name = "db-replica-lag"

    def fault(self, rig: Rig) -> None:
        delay = max(2.0, rig.timing.hold)
        where = set_replay_delay(rig.herd, f"{delay:g}s")
        rig.note(f"recovery_min_apply_delay = {delay:g}s on {where}")
        deadline = time.monotonic() + delay + 5
        seen = ""
        while time.monotonic() < deadline:
            # WAL the replica must replay, beyond what the shoppers write: past the bytes threshold.
            primary_sql(rig.herd, "SELECT pg_logical_emit_message(false, 'drill', repeat('x', 65536))")
            checks = readiness_checks(rig.herd)
            seen = checks.get("database:replica1", "")
            if seen == "error: lagging":
                break
            time.sleep(0.3)
        rig.note(f"web1 /readyz says replica1: {seen!r}")
        try:
            if seen != "error: lagging":
                raise DrillError("the injected lag never crossed the health threshold")
            time.sleep(rig.timing.hold)
        finally:
            set_replay_delay(rig.herd, "0")
        wait_for(lambda: readiness_checks(rig.herd).get("database:replica1") == "ok", 30, "replica healthy again")
        rig.note("delay removed; replica1 healthy again")


class SessionRedisRestart(Drill):
    """Restart the session Redis (stop, start) with no node to promote meanwhile: under
    Sentinel its replica is stopped first (the failover is state-redis-failover's). Sessions
    survive in its append-only file."""

    name = "session-redis-restart"

    def fault(self, rig: Rig) -> None:
        profile = rig.herd.profile
        primary, replica = state_nodes(profile)
        if replica is not None:
            replica.stop()
            rig.note(f"{replica.name} (the replica) stopped: nothing for the Sentinels to promote")
        primary.stop()
        rig.note(f"{primary.name} stopped")
        try:
            probe_session_down_page(rig)
        finally:
            primary.start()
            rig.note(f"{primary.name} started again")
            if replica is not None:
                replica.start()
                took = elapsed_until(lambda: sentinels_ready(profile), 60)
                back = "never" if took is None else f"{took:.1f} s later"
                rig.note(f"{replica.name} started again: the primary's replica {back}")

    def designed(self, failure: Failure) -> bool:
        # Logged-in requests while the session store is down: the clean 503 page, by design.
        return store_down_page(failure)


class StateRedisFailover(Drill):
    """SIGKILL the state Redis's primary node (its machine lost) under the load; the Sentinels
    promote the replica and the app's next connections find it through them. Meanwhile what
    needs the store gets the clean 503. Beside the load, the staff account logs in again and
    again up to the kill: each login acknowledged (302) must still be logged in after it (a
    session save waits for the replica: ``WAIT``, scaling/web/sessions.py). Notes how long
    until the Sentinels name the new primary and until a logged-in page answers through the
    app, and, once the killed node is started again, until it is the new primary's replica.
    ``rounds`` failovers in the full form (the median is the figure), one in the short. Runs
    on the drills herd, or beside a herd without Sentinel on ``sentinel_profile``'s nodes
    (the suite's: deploy/tests/test_drills.py points the app replicas at them)."""

    name = "state-redis-failover"
    needs_sentinel = True
    rounds = 3

    def fault(self, rig: Rig) -> None:
        profile = under_sentinel(rig.herd.profile)
        rounds = self.rounds if rig.timing is FULL else 1
        self.sessions_lost = 0
        promoted, answered, rejoined = [], [], []
        for number in range(1, rounds + 1):
            if elapsed_until(lambda: sentinels_ready(profile), 60) is None:
                raise DrillError(f"round {number}: the Sentinels watch no primary with a linked replica")
            primary, replica = state_nodes(profile)
            probe = Visitor(rig.url)
            if probe.log_in(rig.staff, PASSWORD).status_code != 302:
                raise DrillError(f"round {number}: the probe could not log in")
            if not holds_session(primary, probe.client.cookies["sessionid"]):
                raise DrillError(f"round {number}: {primary.name} has not the app's sessions: it uses another Redis")
            with LoginStream(rig.url, rig.staff) as logins:
                started = time.monotonic()
                elapsed_until(lambda: len(logins.acknowledged) >= LOGINS_BEFORE_KILL, 30)
                time.sleep(max(0.0, rig.timing.hold / 2 - (time.monotonic() - started)))
                os.kill(primary.pid(), signal.SIGKILL)
                killed = time.monotonic()
            before = [at for at, _ in logins.acknowledged if at <= killed]
            rig.note(
                f"round {number}: {primary.name} (primary) SIGKILLed; logins acknowledged before it: {len(before)}"
                + (f", the last {(killed - before[-1]) * 1000:.0f} ms before" if before else "")
                + f"; after it: {len(logins.acknowledged) - len(before)}"
            )
            promoted.append(seconds_since(killed, lambda port=replica.port: sentinel_master_port(profile) == port))
            answered.append(seconds_since(killed, lambda visitor=probe: logged_in_as(visitor) == rig.staff))
            if promoted[-1] is None or answered[-1] is None:
                raise DrillError(f"round {number}: {replica.name} not promoted, or no logged-in page, within 60 s")
            lost = [visitor for _, visitor in logins.acknowledged if logged_in_as(visitor, 10) != rig.staff]
            self.sessions_lost += len(lost)
            rig.note(
                f"round {number}: {replica.name} promoted {promoted[-1]:.1f} s after the kill; a logged-in page "
                f"through the app {answered[-1]:.1f} s; acknowledged logins logged out after it: {len(lost)}"
            )
            time.sleep(rig.timing.hold / 2)
            primary.start()
            rejoined.append(elapsed_until(lambda: sentinels_ready(profile), 60))
            back = "never" if rejoined[-1] is None else f"{rejoined[-1]:.1f} s later"
            rig.note(f"round {number}: {primary.name} started again: {replica.name}'s replica {back}")
            if rejoined[-1] is None:
                raise DrillError(f"round {number}: {primary.name} did not rejoin as a replica within 60 s")
            time.sleep(rig.timing.settle)
        rig.note(
            f"a logged-in page answered again after the kill, median of {rounds}: {median(answered):.1f} s "
            f"(each: {', '.join(f'{t:.1f}' for t in answered)} s; promoted: median {median(promoted):.1f} s; "
            f"Sentinel's down-after {Sentinel.DOWN_AFTER_MS} ms); killed node back as the replica, "
            f"median {median(rejoined):.1f} s"
        )

    def designed(self, failure: Failure) -> bool:
        # A request that needs the store before the app finds the promoted node: the clean 503.
        return store_down_page(failure)


class CacheRedisStop(Drill):
    """Stop the cache Redis for a while: pages are slower, not broken; start it again."""

    name = "cache-redis-stop"

    def fault(self, rig: Rig) -> None:
        redis = Redis(rig.herd.profile, "cache")
        before = page_times(rig)
        redis.stop()
        rig.note("redis-cache stopped")
        try:
            time.sleep(rig.timing.hold / 2)
            during = page_times(rig)
            time.sleep(rig.timing.hold / 2)
        finally:
            redis.start()
        rig.note(
            f"anonymous product page (past the edge cache), median: {before * 1000:.0f} ms with the cache, "
            f"{during * 1000:.0f} ms without"
        )


class WorkerKill(Drill):
    """SIGKILL the worker mid-job; RabbitMQ redelivers the job to the restarted worker."""

    name = "worker-sigkill"
    needs_worker = True

    def setup(self, rig: Rig) -> None:
        load_job_products(rig.job_products)

    def fault(self, rig: Rig) -> None:
        from jobs.models import Job

        worker = rig.worker
        job_id = start_export(rig)
        deadline = time.monotonic() + 60
        while Job.objects.for_id(int(job_id)).get().progress < 5:
            if time.monotonic() > deadline:
                raise DrillError("the export never started")
            time.sleep(0.05)
        pid = worker.pid()
        os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 10, "worker exit")
        job = Job.objects.for_id(int(job_id)).get()
        rig.note(f"worker SIGKILLed with job {job_id} {job.state} at {job.progress}%")
        time.sleep(rig.timing.hold / 2)
        worker.start()
        self.job_id = job_id
        if job.is_finished:
            raise DrillError(f"the export ended before the kill: more than {rig.job_products} products needed")

    def verify(self, rig: Rig, problems: list[str]) -> None:
        from jobs.models import Job
        from notifications.models import Notification

        job = wait_job_end(self.job_id, 90)
        notifications = Notification.objects.for_user(job.owner_id).filter(job_id=job.pk).count()
        rig.note(f"job {self.job_id}: {job.state} after {job.attempts} attempts, {notifications} notification(s)")
        if job.state != Job.State.SUCCEEDED or notifications != 1 or job.attempts < 2:
            problems.append(f"job {job.state} after {job.attempts} attempts, {notifications} notifications")


class BrokerRestart(Drill):
    """Restart RabbitMQ: a job started while it is down waits, queued and unsent; once it is
    back the worker's outbox sweep sends it and it succeeds, as does a job started after."""

    name = "broker-restart"
    needs_worker = True

    def fault(self, rig: Rig) -> None:
        from jobs.models import Job

        broker = RabbitMQ(rig.herd.profile)
        worker_pid = rig.worker.pid()
        broker.stop()
        rig.note("rabbitmq stopped")
        try:
            during_id = start_export(rig)
            during = Job.objects.for_id(int(during_id)).get()
            rig.note(f"job started while it was down: {during.state}, {'sent' if during.sent_at else 'unsent'}")
        finally:
            broker.start()
        rig.note("rabbitmq started again")
        if during.state != Job.State.QUEUED or during.sent_at is not None:
            raise DrillError(f"a job started while the broker was down is {during.state}, not queued and unsent")
        during = wait_job_end(during_id, 90)
        rig.note(f"job started while it was down, once it was back: {during.state}")
        after = wait_job_end(start_export(rig), 90)
        rig.note(f"job started after: {after.state} (worker pid {'kept' if rig.worker.pid() == worker_pid else 'new'})")
        self.outcome = (during.state, after.state)
        if during.state != Job.State.SUCCEEDED:
            raise DrillError(f"a job started while the broker was down ended {during.state} once it was back")
        if after.state != Job.State.SUCCEEDED:
            raise DrillError(f"a job started after the broker came back ended {after.state}")


class BadRequests(Drill):
    """A burst of hostile requests beside the load: each gets a 4xx (or a refused
    socket), never a 500, and no replica crashes."""

    name = "bad-requests"

    def fault(self, rig: Rig) -> None:
        statuses: Counter = Counter()
        self.server_errors: list[str] = []
        answered_ok = []
        for what, send in bad_requests(rig):
            try:
                status = send()
            except httpx.HTTPError as error:
                status = f"no answer ({type(error).__name__})"
            statuses[status] += 1
            if status != "refused" and not (isinstance(status, int) and status < 500):
                self.server_errors.append(f"{what}: {status}")
            elif isinstance(status, int) and status < 400:
                answered_ok.append(f"{what} {status}")
        rig.note(f"{sum(statuses.values())} bad requests: {dict(sorted(statuses.items(), key=str))}")
        rig.note("not 4xx (a form shown again with its error, or a redirect to log in): " + ", ".join(answered_ok))

    def verify(self, rig: Rig, problems: list[str]) -> None:
        problems.extend(self.server_errors)


class ServiceFault(Drill):
    """One data service's proxy (``deploy/faults.py``) in a fault mode for the hold, under the
    load: the app replicas and the worker reach every data service through one. Notes the
    median anonymous product page (past the edge cache) before and during it, and what web1's
    ``/readyz`` says of the services; ``limit`` is the median page the target allows."""

    service = ""
    mode = ""
    delay_ms = 0.0
    probe = "product page"

    def fault(self, rig: Rig) -> None:
        faults = proxies(rig, self.service)
        before, _ = sample_pages(rig, self.probe)
        with faults.injected(self.service, self.mode, self.delay_ms):
            delay = f" {self.delay_ms:g} ms per round trip" if self.delay_ms else ""
            rig.note(f"{self.service} proxy: {self.mode}{delay}")
            time.sleep(rig.timing.hold / 2)
            during, outcomes = sample_pages(rig, self.probe)
            rig.note(f"web1 /readyz during: {readiness_checks(rig.herd) or 'no answer'}")
            self.during(rig)
            time.sleep(rig.timing.hold / 2)
        rig.note(f"{self.service} proxy back to pass")
        self.after(rig)
        reference = self.reference(rig, faults)
        rig.note(
            f"anonymous {self.probe}, median: {before * 1000:.0f} ms before, {during * 1000:.0f} ms during"
            + (f", {reference * 1000:.0f} ms with {self.service} refused" if reference else "")
            + f" (answers during: {dict(outcomes)})"
        )
        limit = self.limit(before, reference)
        if limit is not None and during > limit:
            raise DrillError(f"pages took {during * 1000:.0f} ms during the fault, target {limit * 1000:.0f} ms")
        if bad := {k: v for k, v in outcomes.items() if not (isinstance(k, int) and k < 500)}:
            raise DrillError(f"timed pages answered {bad} during the fault")

    def during(self, rig: Rig) -> None:
        """More probes while the fault holds (after the timed pages)."""

    def after(self, rig: Rig) -> None:
        """More checks once the proxy is back to ``pass``."""

    def reference(self, rig: Rig, faults: Faults) -> float:
        return 0.0

    def limit(self, before: float, reference: float) -> float | None:
        return None


class CacheRedisFault(ServiceFault):
    """The cache Redis slow or cut off: its circuit breaker (``scaling/cache/breaker.py``) must
    keep pages near their time without the cache, measured after with the proxy refusing."""

    service = "redis-cache"

    def fault(self, rig: Rig) -> None:
        # The breakers an earlier cache drill opened closed again (web1's, and by then the
        # others': each process's first call after the cool-down probes).
        wait_for(lambda: readiness_checks(rig.herd).get("redis:cache") == "ok", 15, "the cache breaker closed")
        super().fault(rig)

    def reference(self, rig: Rig, faults: Faults) -> float:
        with faults.injected(self.service, "refuse"):
            sample_pages(rig)  # each replica's breaker opens
            return sample_pages(rig)[0]

    def limit(self, before: float, reference: float) -> float:
        return 1.5 * max(before, reference) + 0.1


def in_mode(base: type[ServiceFault], name: str, mode: str, delay_ms: float = 0.0) -> type[ServiceFault]:
    """The drill ``name``: ``base``'s service with its proxy in ``mode``."""
    return type(name.title().replace("-", ""), (base,), {"name": name, "mode": mode, "delay_ms": delay_ms})


CacheRedisSlow = in_mode(CacheRedisFault, "cache-redis-slow", "delay", 200)
CacheRedisPartition = in_mode(CacheRedisFault, "cache-redis-partition", "blackhole")


class ReplicaFault(ServiceFault):
    """The PostgreSQL replica slow or cut off: reads must move to the primary
    (``scaling/db/replicas.py``), pages near their usual time, no failed read."""

    service = "postgres-replica"
    probe = "catalog search"

    def limit(self, before: float, reference: float) -> float:
        return 3 * before + 0.3


ReplicaSlow = in_mode(ReplicaFault, "replica-slow", "delay", 200)
ReplicaPartition = in_mode(ReplicaFault, "replica-partition", "blackhole")


class StateRedisSlow(ServiceFault):
    """The session Redis 200 ms away: logged-in pages slower, no error."""

    name = "state-redis-slow"
    service = "redis-state"
    needs_single_state_node = True
    mode = "delay"
    delay_ms = 200


class LoginStream:
    """Logins as ``username`` one after another on a thread, each a new visitor, from entering
    the block until leaving it: ``acknowledged`` holds (when, visitor) for each answered 302."""

    def __init__(self, url: str, username: str) -> None:
        import threading

        self.url, self.username = url, username
        self.acknowledged: list[tuple[float, Visitor]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.done.is_set():
            visitor = Visitor(self.url)
            with contextlib.suppress(httpx.HTTPError, AssertionError):  # the store away: no form, or a 503
                if visitor.log_in(self.username, PASSWORD).status_code == 302:
                    self.acknowledged.append((time.monotonic(), visitor))

    def __enter__(self) -> LoginStream:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.done.set()
        self.thread.join(30)


class PrimaryAway:
    """What the primary drills check while the app cannot reach the plain primary (no
    failover): reads answer, anonymous and logged in; a write is the clean 503; no app
    replica leaves HAProxy; once it is back, a review is saved through the app."""

    def start_watch(self, rig: Rig) -> None:
        self.shopper = Visitor(rig.url)
        assert self.shopper.log_in(rig.shoppers[0][0], PASSWORD).status_code == 302
        self.watch = ReadinessWatch(rig.herd)
        self.since = time.monotonic()
        self.failed: list[str] = []

    def probe_reads_and_write(self, rig: Rig) -> None:
        slug = rig.shoppers[0][1][1]
        anonymous = httpx.Client(headers={"Cache-Control": "no-cache"}, timeout=15)
        answers = {}
        for what, client, path in (
            ("anonymous product page", anonymous, f"/p/{slug}/"),
            ("logged-in profile", self.shopper.client, "/accounts/profile/"),
            ("logged-in product page", self.shopper.client, f"/p/{slug}/"),
        ):
            started = time.monotonic()
            try:
                status = str(client.get(self.shopper.url(path)).status_code)
            except httpx.HTTPError as error:
                status = type(error).__name__
            answers[what] = f"{status} in {time.monotonic() - started:.1f} s"
            if status != "200":
                self.failed.append(f"{what}: {status} with the primary away")
        anonymous.close()
        rig.note(f"reads with the primary away: {', '.join(f'{k} {v}' for k, v in answers.items())}")
        started = time.monotonic()
        try:
            self.failed.extend(probe_read_only_write(rig, self.shopper))
        except httpx.HTTPError as error:
            self.failed.append(f"a write with the primary away: {type(error).__name__}")
        rig.note(f"(that write answered in {time.monotonic() - started:.1f} s)")

    def stop_watch(self, rig: Rig) -> None:
        rig.note(f"app replicas' /readyz while the primary was away: {self.watch.stop(self.since)}")
        if self.watch.seen:
            self.failed.append("an app replica's /readyz failed while the primary was away")

    def writes_again(self, rig: Rig) -> None:
        def saved() -> bool:
            try:
                return review_saved(rig, self.shopper)
            except httpx.HTTPError:
                return False

        took = elapsed_until(saved, 60)
        rig.note(f"a review through the app saved {'never' if took is None else f'{took:.1f} s'} after it was back")
        if took is None:
            self.failed.append("no review saved within 60 s of the primary coming back")
        if self.failed:
            raise DrillError("; ".join(self.failed))

    def designed(self, failure: Failure) -> bool:
        # A write while the primary is away: the app's clean 503 (read-only mode).
        return not failure.idempotent and failure.status == 503 and failure.served_by is not None

    def verify(self, rig: Rig, problems: list[str]) -> None:
        from django.db import connections

        connections.close_all()  # this process's connections to the primary may be broken


class DatabasePrimaryStop(PrimaryAway, Drill):
    """Stop the PostgreSQL primary for the hold with no failover possible, then start it
    again: the site is read-only meanwhile (``PrimaryAway``). Under Patroni, in maintenance
    mode (``pause``: nothing is promoted, the stopped server is not restarted), its server
    stopped and then started again by its Patroni (``POST /restart``), then resumed; the
    same member must be the primary afterwards, on the same timeline."""

    name = "db-primary-stop"

    def fault(self, rig: Rig) -> None:
        if not rig.herd.profile.patroni:
            primary = Postgres(rig.herd.profile, replica=False)
            self.start_watch(rig)
            primary.stop()
            rig.note("postgres-primary stopped (fast shutdown)")
            self.hold(rig, primary.start, "postgres-primary started again")
            self.writes_again(rig)
            return
        cluster = PatroniCluster(rig.herd.profile)
        cluster.wait_ready(60)
        member, timeline = cluster.primary(), cluster.primary().timeline()
        self.start_watch(rig)
        cluster.pause()
        try:
            member.stop_postgres()
            rig.note(f"Patroni paused; {member.member}'s PostgreSQL (the primary, timeline {timeline}) stopped (fast)")
            self.hold(rig, member.start_postgres, f"{member.member}'s PostgreSQL started again by its Patroni")
        finally:
            cluster.resume()
        after = cluster.primary()
        rig.note(
            f"Patroni resumed; the primary: {after.member if after else 'none'} on timeline "
            f"{after.timeline() if after else '-'}"
        )
        if after is None or after.member != member.member or after.timeline() != timeline:
            self.failed.append(f"the primary changed while Patroni was paused: {after.member if after else 'none'}")
        self.writes_again(rig)
        cluster.wait_ready(60)

    def hold(self, rig: Rig, start: Callable[[], None], started: str) -> None:
        """The probes while the primary is down, the rest of the hold, then ``start``."""
        try:
            time.sleep(min(1.0, rig.timing.hold / 2))
            self.probe_reads_and_write(rig)
            time.sleep(max(0.0, rig.timing.hold - (time.monotonic() - self.since)))
        finally:
            self.stop_watch(rig)
            start()
            rig.note(started)


class PrimaryFault(PrimaryAway, ServiceFault):
    """The app's path to the plain primary cut (blackhole) through its proxy, the primary
    itself running (the drill's own checks reach it directly): read-only, as when it stops."""

    service = "postgres-primary"

    def fault(self, rig: Rig) -> None:
        self.start_watch(rig)
        before = patroni_primary(rig)
        try:
            super().fault(rig)
        finally:
            if not self.watch.done.is_set():
                self.stop_watch(rig)
        note_failover(rig, before)
        self.writes_again(rig)

    def during(self, rig: Rig) -> None:
        self.probe_reads_and_write(rig)
        self.stop_watch(rig)

    def limit(self, before: float, reference: float) -> float:
        return 3 * before + 0.3


PrimaryPartition = in_mode(PrimaryFault, "db-primary-partition", "blackhole")


class PrimarySlow(ServiceFault):
    """The primary 200 ms per round trip: writes slower, reads (on the replica) near their time."""

    name = "db-primary-slow"
    service = "postgres-primary"
    mode = "delay"
    delay_ms = 200

    def fault(self, rig: Rig) -> None:
        before = patroni_primary(rig)
        super().fault(rig)
        note_failover(rig, before)

    def limit(self, before: float, reference: float) -> float:
        return 3 * before + 0.3


def patroni_primary(rig: Rig) -> tuple[str, int | None] | None:
    """Under Patroni, the primary member and its timeline now (None on the plain tier)."""
    if not rig.herd.profile.patroni:
        return None
    primary = PatroniCluster(rig.herd.profile).primary()
    return (primary.member, primary.timeline()) if primary else ("none", None)


def note_failover(rig: Rig, before: tuple[str, int | None] | None) -> None:
    """Whether Patroni failed over while the app's path to the primary was faulted: it does
    not see that path (its members and etcd reach each other directly)."""
    if before is None:
        return
    after = patroni_primary(rig)
    verdict = "no failover" if after == before else "a FAILOVER"
    rig.note(
        f"Patroni's primary: {before[0]} (timeline {before[1]}) before, {after[0]} (timeline {after[1]}) "
        f"after: {verdict}"
    )


class BrokerPartition(Drill):
    """RabbitMQ cut off (its proxy a blackhole): starting a job must still answer; notes
    how long it took, and what became of the job once the partition healed."""

    name = "broker-partition"
    service = "rabbitmq"
    needs_worker = True
    answer_within = 10.0

    def fault(self, rig: Rig) -> None:
        faults = proxies(rig, self.service)
        with faults.injected(self.service, "blackhole"):
            rig.note("rabbitmq proxy: blackhole")
            started = time.monotonic()
            try:
                job_id = start_export(rig)
                outcome = f"job {job_id} started"
            except (DrillError, httpx.HTTPError) as error:
                job_id, outcome = None, f"no job: {type(error).__name__}: {error}"
            took = time.monotonic() - started
            rig.note(f"starting an export during the partition answered in {took:.1f} s: {outcome}")
            time.sleep(max(0.0, rig.timing.hold - took))
        rig.note("rabbitmq proxy back to pass")
        if job_id is not None:
            job = wait_job_end(job_id, 60)
            rig.note(f"job {job_id} after the partition healed: {job.state} {job.error or ''}".rstrip())
        if took > self.answer_within or job_id is None:
            raise DrillError(f"starting a job during the partition: {outcome} after {took:.1f} s")


class PrimaryFailover(Drill):
    """SIGKILL the PostgreSQL primary's member, Patroni and its postmaster at once (its machine
    lost), under the load; Patroni promotes the synchronous standby once the leader key
    expires. Meanwhile reads answer from the standby (read-only mode) and writes get the
    clean 503. Notes how long until a write is accepted again through HAProxy's primary
    listener and through the app, and, once the killed member is started again (as its
    supervisor would), how long until it is back as the synchronous standby (pg_rewind).
    ``rounds`` failovers in the full form (the median is the figure), one in the short."""

    name = "primary-failover"
    needs_patroni = True
    rounds = 3

    def fault(self, rig: Rig) -> None:
        from django.db import connections

        cluster = PatroniCluster(rig.herd.profile)
        self.killed_at: list[float] = []
        rounds = self.rounds if rig.timing is FULL else 1
        write_back, rejoin = [], []
        failed: list[str] = []
        for number in range(1, rounds + 1):
            cluster.wait_ready(120)
            old, standby = cluster.primary(), cluster.synchronous_standby()
            if old is None or standby is None:
                raise DrillError(f"round {number}: no primary with a synchronous standby to fail over to")
            timeline = old.timeline()
            # The drill's own reviews come from the staff account: a shopper's would replace the
            # load's acknowledged review of the same product (one review per user and product).
            probe = Visitor(rig.url)
            assert probe.log_in(rig.staff, PASSWORD).status_code == 302
            watch = ReadinessWatch(rig.herd)
            old.kill()
            self.killed_at.append(time.monotonic())
            rig.note(f"round {number}: {old.member} (primary, timeline {timeline}) SIGKILLed, Patroni and postmaster")
            try:
                time.sleep(2)
                failed.extend(probe_read_only_write(rig, probe))
                if elapsed_until(lambda: primary_writable(cluster), 120) is None:
                    raise DrillError(f"round {number}: no write accepted within 120 s of the kill")
                took = time.monotonic() - self.killed_at[-1]
                write_back.append(took)
                app_took = elapsed_until(lambda visitor=probe: review_saved(rig, visitor), 60)
                app = "never" if app_took is None else f"{time.monotonic() - self.killed_at[-1]:.1f} s"
                rig.note(
                    f"round {number}: {standby.member} promoted (timeline {standby.timeline()}); a write through "
                    f"HAProxy's primary listener accepted {took:.1f} s after the kill, a review through the app {app}"
                )
                time.sleep(rig.timing.hold)
            finally:
                rig.note(f"round {number}: app replicas' /readyz after the kill: {watch.stop(self.killed_at[-1])}")
                # Its supervisor starts the lost member again (here, the drill): Patroni rewinds it.
                rewinds = old.log.read_text().count("pg_rewind exit code=0")
                old.launch()
            back = elapsed_until(lambda m=old: m.role() == "replica" and m.is_sync_standby(), 180)
            if back is None:
                raise DrillError(f"round {number}: {old.member} did not come back as the synchronous standby")
            rejoin.append(back)
            rewound = old.log.read_text().count("pg_rewind exit code=0") > rewinds
            rig.note(
                f"round {number}: {old.member} started again: the synchronous standby on timeline "
                f"{old.timeline()} {back:.1f} s later{' (pg_rewind)' if rewound else ''}"
            )
            connections.close_all()
            time.sleep(rig.timing.settle)
        median = sorted(write_back)[len(write_back) // 2]
        rig.note(
            f"writes accepted again after the kill, median of {rounds}: {median:.1f} s "
            f"(each: {', '.join(f'{t:.1f}' for t in write_back)} s; Patroni's ttl {TTL} s, loop_wait {LOOP_WAIT} s); "
            f"old primary back as the synchronous standby, median {sorted(rejoin)[len(rejoin) // 2]:.1f} s"
        )
        if failed:
            raise DrillError("; ".join(failed))

    def designed(self, failure: Failure) -> bool:
        # A write while no primary is up: the app's clean 503 (read-only mode), never a 500;
        # a write in flight at the kill got the same, its transaction never acknowledged.
        return not failure.idempotent and failure.status == 503 and failure.served_by is not None

    def verify(self, rig: Rig, problems: list[str]) -> None:
        from django.db import connections

        connections.close_all()  # this process's connections went to the killed primary


class ReadinessWatch:
    """Each app replica's ``/readyz`` polled on a thread of its own until ``stop``: when one
    said it was not ready, and what its checks said."""

    def __init__(self, herd: Herd) -> None:
        import threading

        self.herd = herd
        self.seen: list[tuple[float, str, int | None, dict]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with httpx.Client(timeout=3) as client:
            while not self.done.is_set():
                for web in self.herd.webs():
                    try:
                        answer = client.get(f"http://127.0.0.1:{web.port}/readyz")
                        status, checks = answer.status_code, answer.json().get("checks", {})
                    except (httpx.HTTPError, ValueError):
                        status, checks = None, {}
                    if status != 200:
                        self.seen.append((time.monotonic(), web.name, status, checks))
                time.sleep(0.25)

    def stop(self, since: float) -> str:
        self.done.set()
        self.thread.join(5)
        if not self.seen:
            return "200 throughout"
        first, last = self.seen[0], self.seen[-1]
        bad = {key: value for key, value in first[3].items() if value not in ("ok", "no")}
        return (
            f"{len(self.seen)} answers not 200, from {first[0] - since:+.1f} s to {last[0] - since:+.1f} s "
            f"(first: {first[1]} {first[2]} {bad})"
        )


def primary_writable(cluster: PatroniCluster) -> bool:
    """A committed write through HAProxy's primary listener (a fresh connection each time)."""
    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=cluster.proxy.port,
            user="herd",
            dbname="postgres",
            connect_timeout=2,
            options="-c statement_timeout=3000",
            autocommit=True,
        ) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS drill_failover (at timestamptz)")
            conn.execute("INSERT INTO drill_failover VALUES (now())")
        return True
    except psycopg.Error:
        return False


def review_form(rig: Rig, visitor: Visitor) -> tuple[str, dict]:
    slug = rig.shoppers[0][1][int.from_bytes(os.urandom(2)) % PRODUCTS_PER_SHOPPER]
    page = visitor.get(f"/p/{slug}/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    text = f"probe {os.urandom(6).hex()}"
    data = {"csrfmiddlewaretoken": token.group(1) if token else "", "rating": "4", "text": text}
    return f"/p/{slug}/review/", data


def review_saved(rig: Rig, visitor: Visitor) -> bool:
    path, data = review_form(rig, visitor)
    return visitor.client.post(visitor.url(path), data=data).status_code == 302


def probe_read_only_write(rig: Rig, visitor: Visitor) -> list[str]:
    """While no primary is up, a logged-in shopper's review: the clean 503 of read-only mode.
    The problems seen (none when it was)."""
    path, data = review_form(rig, visitor)
    response = visitor.client.post(visitor.url(path), data=data)
    clean = READ_ONLY_TEXT in response.text and "Traceback" not in response.text
    rig.note(
        f"a review posted while no primary was up: {response.status_code} from "
        f"{response.headers.get('X-Served-By', 'haproxy')}, Retry-After {response.headers.get('Retry-After')}, "
        f"{'the clean read-only page' if clean else 'NOT the read-only page'}"
    )
    if response.status_code != 503 or not clean:
        return [f"a write with no primary answered {response.status_code}: {' '.join(response.text[:300].split())!r}"]
    return []


DRILLS: dict[str, type[Drill]] = {
    drill.name: drill
    for drill in (
        ReplicaKill,
        ReplicaStop,
        DatabaseReplicaStop,
        DatabaseReplicaLag,
        SessionRedisRestart,
        StateRedisFailover,
        CacheRedisStop,
        WorkerKill,
        BrokerRestart,
        BadRequests,
        CacheRedisSlow,
        CacheRedisPartition,
        ReplicaSlow,
        ReplicaPartition,
        StateRedisSlow,
        BrokerPartition,
        DatabasePrimaryStop,
        PrimaryPartition,
        PrimarySlow,
        PrimaryFailover,
    )
}


class DrillError(Exception):
    """A drill could not do what it set out to (not a finding about the herd)."""


# --------------------------------------------------------------------------- the engine


def run_drill(rig: Rig, drill: Drill) -> Result:
    """Load, fault, recovery, verification: one drill, its result and its table row."""
    print(f"  {drill.name}", flush=True)
    rig.notes = []
    pids_before = {web.name: web.pid() for web in rig.herd.webs()}
    problems: list[str] = []
    drill.setup(rig)
    load = Load(rig.url, rig.shoppers, password=PASSWORD, browsers=rig.browsers)
    with load:
        time.sleep(rig.timing.warmup)
        try:
            drill.fault(rig)
        except (DrillError, HerdError) as error:
            problems.append(f"drill: {error}")
        time.sleep(rig.timing.settle)
    load.check_everyone_still_logged_in()
    drill.verify(rig, problems)
    load.report.sessions_lost += drill.sessions_lost

    report = load.report
    designed = [f for f in report.failed if drill.designed(f)]
    undesigned = [f for f in report.failed if not drill.designed(f)]
    if failed_reads := [f for f in undesigned if f.idempotent]:
        problems.append(f"{len(failed_reads)} idempotent requests failed")
    if failed_writes := [f for f in undesigned if not f.idempotent]:
        problems.append(f"{len(failed_writes)} writes failed")
    if server_errors := [f for f in undesigned if f.status is not None and f.status >= 500 and f.served_by]:
        problems.append(f"{len(server_errors)} 5xx answers from replicas")
    found = reviews_in_primary(report.saved_reviews)
    if found != len(report.saved_reviews):
        problems.append(f"{len(report.saved_reviews) - found} acknowledged writes lost")
        for note in missing_reviews(rig, report.saved_reviews):
            rig.note(note)
    if report.sessions_lost:
        problems.append(f"{report.sessions_lost} sessions lost")
    if report.stale_reads:
        problems.append(f"{report.stale_reads} reads missed the shopper's own write")
    for web in rig.herd.webs():
        if web.name not in drill.restarts and web.pid() != pids_before.get(web.name):
            problems.append(f"{web.name} crashed or restarted")
    if not rig.herd.haproxy().healthy():
        problems.append("haproxy is down")
    for failure in undesigned[:5]:
        rig.note(f"failure: {failure}")
    if designed:
        rig.note(f"designed failures: {len(designed)}, e.g. {designed[0]}")
    result = Result(drill.name, report, found, len(designed), problems, list(rig.notes))
    print(result.row(), flush=True)
    return result


def reviews_in_primary(texts: list[str]) -> int:
    from catalog.models import Review

    found = 0
    for start in range(0, len(texts), 500):
        found += Review.objects.using("default").filter(text__in=texts[start : start + 500]).count()
    return found


def missing_reviews(rig: Rig, texts: list[str]) -> list[str]:
    """For each acknowledged review not in the primary, what the primary holds for that
    shopper and product now (a later review of the same product replaces it)."""
    from catalog.models import Review

    found = set(Review.objects.using("default").filter(text__in=texts).values_list("text", flat=True))
    slugs = dict(rig.shoppers)
    notes = []
    for text in texts:
        match = re.fullmatch(r"review (\d+) by (\S+) \(\d+\)", text)
        if text in found or match is None:
            continue
        slug = slugs[match.group(2)][int(match.group(1))]
        now = Review.objects.using("default").filter(user__username=match.group(2), product__slug=slug).first()
        held = f"{now.text!r}, dated {now.created_at:%H:%M:%S.%f}" if now else "no review"
        notes.append(f"lost: {text!r} ({slug}); the primary holds for that shopper and product: {held}")
    return notes


# --------------------------------------------------------------------------- helpers


def database_url(herd: Herd) -> dict:
    env = herd.profile.django_env(herd.database)
    port = int(re.search(r":(\d+)/", env["DATABASE_URL"]).group(1))
    return {"host": "127.0.0.1", "port": port, "user": "herd", "dbname": herd.database}


def primary_sql(herd: Herd, query: str) -> None:
    with psycopg.connect(**database_url(herd), autocommit=True) as conn:
        conn.execute(query)


def set_replay_delay(herd: Herd, delay: str) -> str:
    """``recovery_min_apply_delay`` on the replica; where it was set. Under Patroni, in the
    cluster's dynamic configuration (Patroni compares the recovery settings with its own on
    each loop and rewrites one it did not set): every member gets it, only a standby replays."""
    if herd.profile.patroni:
        cluster = PatroniCluster(herd.profile)
        value = None if delay in ("0", "0s") else delay
        cluster.configure({"postgresql": {"parameters": {"recovery_min_apply_delay": value}}})
        members = ", ".join(member.member for member in cluster.replicas()) or "no replica"
        return f"the Patroni replica ({members}), through Patroni's dynamic configuration"
    params = {**database_url(herd), "port": database_url(herd)["port"] + 1, "dbname": "postgres"}
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")
        conn.execute("SELECT pg_reload_conf()")
    return "the replica"


def readiness_checks(herd: Herd) -> dict[str, str]:
    try:
        return httpx.get(f"http://127.0.0.1:{herd.webs()[0].port}/readyz", timeout=5).json()["checks"]
    except (httpx.HTTPError, ValueError, KeyError):
        return {}


def page_times(rig: Rig) -> float:
    return sample_pages(rig)[0]


def sample_pages(rig: Rig, probe: str = "product page") -> tuple[float, Counter]:
    """The median of ``samples`` anonymous pages past the edge cache, and their answers
    (status codes, or the error's name: then the time until it). ``probe``: the product
    page, or a catalog search of a price never asked before (no cache has it: the database)."""
    slug = rig.shoppers[0][1][0]
    times = []
    outcomes: Counter = Counter()
    with httpx.Client(headers={"Cache-Control": "no-cache"}, timeout=15) as client:
        for _ in range(rig.timing.samples):
            path = f"p/{slug}/" if probe == "product page" else f"products/?min_price={int.from_bytes(os.urandom(3))}"
            started = time.perf_counter()
            try:
                outcomes[client.get(rig.url + path).status_code] += 1
            except httpx.HTTPError as error:
                outcomes[type(error).__name__] += 1
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2], outcomes


def proxies(rig: Rig, service: str) -> Faults:
    if rig.faults is None or service not in rig.faults.proxies:
        raise DrillError(f"the herd does not reach {service} through a fault proxy (deploy/faults.py)")
    return rig.faults


def probe_session_down_page(rig: Rig) -> None:
    """While the session store is down, a logged-in page straight from a replica: a clean 503."""
    visitor = Visitor(rig.url)
    visitor.client.cookies.set("sessionid", "a" * 32)
    response = visitor.get("/accounts/profile/", port=rig.herd.webs()[0].port)
    clean = SESSION_DOWN_TEXT in response.text and "Traceback" not in response.text
    rig.note(
        f"logged-in page with the session store down: {response.status_code}, "
        f"Retry-After {response.headers.get('Retry-After')}, {'clean page' if clean else 'NOT a clean page'}"
    )
    if response.status_code != 503 or not clean:
        raise DrillError(f"the page with sessions down was a {response.status_code}: {response.text[:200]!r}")


def store_down_page(failure: Failure) -> bool:
    """The app's clean 503 for a request whose session store is away."""
    return failure.status == 503 and failure.served_by is not None and SESSION_DOWN_TEXT in failure.detail.lower()


def under_sentinel(profile: Profile) -> Profile:
    """Where ``profile``'s app finds a state Redis under Sentinel: its own, or beside it."""
    return profile if profile.sentinel else sentinel_profile(profile)


def state_nodes(profile: Profile) -> tuple[Redis, Redis | None]:
    """The state Redis's primary node and, under Sentinel, its replica, as the Sentinels say now."""
    if not profile.sentinel:
        return Redis(profile, "state"), None
    first, second = Redis(profile, "state"), Redis(profile, "state", node=2)
    return (second, first) if sentinel_master_port(profile) == second.port else (first, second)


def sentinel_master_port(profile: Profile) -> int | None:
    """The state Redis primary's port, as the first Sentinel that answers names it."""
    for port in SENTINEL_PORTS:
        with contextlib.suppress(redis.RedisError):
            found = redis.Redis("127.0.0.1", profile.port(port), socket_timeout=1).sentinel_get_master_addr_by_name(
                SENTINEL_MASTER
            )
            if found:
                return int(found[1])
    return None


def sentinels_ready(profile: Profile) -> bool:
    """Whether a failover could promote now: every Sentinel names the same primary, sees
    the two other Sentinels and the replica up, and the replica's link to it is up."""
    try:
        masters = set()
        for port in SENTINEL_PORTS:
            sentinel = redis.Redis("127.0.0.1", profile.port(port), socket_timeout=1)
            found = sentinel.sentinel_get_master_addr_by_name(SENTINEL_MASTER)
            others = [s for s in sentinel.sentinel_sentinels(SENTINEL_MASTER) if not s["is_sdown"]]
            replicas = [r for r in sentinel.sentinel_slaves(SENTINEL_MASTER) if not r["is_sdown"]]
            if not found or len(others) < 2 or not replicas:
                return False
            masters.add(int(found[1]))
        (master,) = masters
        _, replica = state_nodes(profile)
        info = redis.Redis("127.0.0.1", replica.port, socket_timeout=1).info("replication")
        return info["role"] == "slave" and info["master_port"] == master and info["master_link_status"] == "up"
    except (redis.RedisError, ValueError, KeyError):
        return False


def holds_session(node: Redis, session_key: str) -> bool:
    """Whether the Redis ``node`` holds the session ``session_key`` (under any key prefix)."""
    with contextlib.suppress(redis.RedisError):
        client = redis.Redis("127.0.0.1", node.port, socket_timeout=2)
        return any(True for _ in client.scan_iter(match=f"*{session_key}", count=1000))
    return False


def logged_in_as(visitor: Visitor, timeout: float = 0.0) -> str | None:
    """The username the profile page through HAProxy names for ``visitor``, or None (logged
    out, or no page). ``timeout``: while the answer is no page at all (a 503), ask again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = visitor.get("/accounts/profile/")
        except httpx.HTTPError:
            response = None
        if (response is not None and response.status_code in (200, 302)) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    found = re.search(r'data-username="([^"]+)"', response.text) if response and response.status_code == 200 else None
    return found.group(1) if found else None


def seconds_since(start: float, predicate: Callable[[], bool], timeout: float = 60.0) -> float | None:
    """Seconds from ``start`` (``time.monotonic()``) until ``predicate()`` held, polled; None
    if not within ``timeout`` from now."""
    if elapsed_until(predicate, timeout, 0.05) is None:
        return None
    return time.monotonic() - start


def median(values: list[float | None]) -> float:
    known = sorted(value for value in values if value is not None)
    return known[len(known) // 2] if known else float("nan")


def start_export(rig: Rig) -> str:
    """Start a catalog export through HAProxy as the staff user; the job's id."""
    visitor = Visitor(rig.url)
    assert visitor.log_in(rig.staff, PASSWORD).status_code == 302
    page = visitor.get("/jobs/")
    form = page.text.split('action="/jobs/start/catalog_export/"', 1)[1].split("</form>", 1)[0]
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form))
    started = visitor.client.post(f"{rig.url}jobs/start/catalog_export/", data=fields)
    if started.status_code != 302:
        raise DrillError(f"starting an export answered {started.status_code}")
    return started.headers["Location"].rstrip("/").rsplit("/", 1)[1]


def wait_job_end(job_id: str, timeout: float):
    from jobs.models import Job

    deadline = time.monotonic() + timeout
    while True:
        job = Job.objects.for_id(int(job_id)).get()
        if job.is_finished or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def bad_requests(rig: Rig) -> list[tuple[str, Callable[[], int | str]]]:
    """(what, send) pairs; ``send`` returns the status, or ``"refused"`` for a refused socket."""
    url = rig.url
    slug = rig.shoppers[0][1][0]
    staff = Visitor(url)
    assert staff.log_in(rig.staff, PASSWORD).status_code == 302
    shopper = Visitor(url)
    assert shopper.log_in(rig.shoppers[0][0], PASSWORD).status_code == 302
    token = staff.client.cookies["csrftoken"]
    shopper_token = shopper.client.cookies["csrftoken"]
    lb_host = url.split("//", 1)[1].rstrip("/")

    def post(visitor: Visitor, path: str, csrf: str, headers: dict | None = None, **kwargs) -> Callable[[], int]:
        headers = {"X-CSRFToken": csrf, **(headers or {})}
        return lambda: visitor.client.post(url + path.lstrip("/"), headers=headers, **kwargs).status_code

    def import_csv(content: bytes, name: str = "catalog.csv") -> Callable[[], int]:
        data = {"csrfmiddlewaretoken": token, "idempotency_key": os.urandom(8).hex()}
        return post(staff, "/jobs/start/catalog_import/", token, data=data, files={"file": (name, content, "text/csv")})

    def raw_import(body: bytes, content_type: str) -> Callable[[], int]:
        return post(staff, "/jobs/start/catalog_import/", token, headers={"Content-Type": content_type}, content=body)

    def forged(cookie: str, path: str = "/accounts/profile/") -> Callable[[], int]:
        return lambda: httpx.get(url + path.lstrip("/"), headers={"Cookie": cookie}, timeout=15).status_code

    def socket(origin: str | None, cookie: str | None = None) -> Callable[[], int | str]:
        def send() -> int | str:
            headers = {"Cookie": cookie} if cookie else {}
            try:
                with connect(f"ws://{lb_host}/ws/notifications/", origin=origin, additional_headers=headers):
                    return 101  # accepted: a bad socket must not be
            except InvalidHandshake as refused:
                status = getattr(getattr(refused, "response", None), "status_code", None)
                return status if status is not None and status >= 500 else "refused"

        return send

    session = shopper.client.cookies["sessionid"]
    big = b"x" * (3 * 1024 * 1024)
    return [
        (
            "review body over the 2.5 MB form limit",
            post(
                shopper,
                f"/p/{slug}/review/",
                shopper_token,
                content=b"text=" + big,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
        ),
        ("12 MB CSV upload", import_csv(b"name,slug\n" + b"a,b\n" * (3 * 1024 * 1024))),
        (
            "profile picture of 12 MB",
            post(
                shopper,
                "/accounts/profile/",
                shopper_token,
                data={"display_name": "x", "csrfmiddlewaretoken": shopper_token},
                files={"picture": ("p.png", b"\x89PNG" + os.urandom(12 * 1024 * 1024), "image/png")},
            ),
        ),
        ("CSV that is not UTF-8", import_csv("name,slug\nCaf\xe9,cafe\n".encode("latin-1"))),
        ("CSV without its columns", import_csv(b"foo;bar\n1;2\n")),
        ("CSV with an unclosed quote", import_csv(b'name,slug,category,price,stock,description\n"oops,a,b,1,1,x\n')),
        ("empty CSV", import_csv(b"")),
        ("binary file as CSV", import_csv(os.urandom(4096), "catalog.csv")),
        ("multipart without a boundary", raw_import(b"--x\r\n\r\n", "multipart/form-data")),
        (
            "multipart with a broken body",
            raw_import(
                b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\nabc',
                "multipart/form-data; boundary=zz",
            ),
        ),
        (
            "review without CSRF",
            lambda: (
                httpx.post(
                    url + f"p/{slug}/review/",
                    data={"rating": "5", "text": "x"},
                    headers={"Cookie": f"sessionid={session}"},
                ).status_code
            ),
        ),
        (
            "review with a rating of 99",
            post(
                shopper,
                f"/p/{slug}/review/",
                shopper_token,
                data={"rating": "99", "text": "x", "csrfmiddlewaretoken": shopper_token},
            ),
        ),
        ("forged session cookie", forged("sessionid=" + "f" * 32)),
        ("session cookie of 4 KB", forged("sessionid=" + "A" * 4000)),
        ("session cookie with odd bytes", forged("sessionid=..%2F..%2F%00%ff; csrftoken=%%%")),
        ("short session cookie", forged("sessionid=x")),
        (
            "forged cookie on a POST",
            lambda: (
                httpx.post(
                    url + f"p/{slug}/review/",
                    data={"rating": "5"},
                    headers={"Cookie": "sessionid=" + "e" * 32 + "; csrftoken=" + "c" * 32, "X-CSRFToken": "c" * 32},
                ).status_code
            ),
        ),
        ("bad Host header", lambda: httpx.get(url, headers={"Host": "evil.example"}).status_code),
        ("bad keyset cursor", lambda: httpx.get(url + "products/?after=%ff%00garbage").status_code),
        ("bad price filter", lambda: httpx.get(url + "products/?min_price=abc&max_price=1e999").status_code),
        ("unknown job kind", post(staff, "/jobs/start/nonsense/", token, data={"csrfmiddlewaretoken": token})),
        ("someone else's job id", lambda: shopper.get("/jobs/999999999/").status_code),
        ("socket from a foreign origin", socket("http://evil.example", f"sessionid={session}")),
        ("socket without an origin", socket(None, f"sessionid={session}")),
        ("socket with a forged session", socket(f"http://{lb_host}", "sessionid=" + "f" * 32)),
        ("socket, anonymous", socket(f"http://{lb_host}")),
    ]


# --------------------------------------------------------------------------- set-up


def load_job_products(count: int) -> None:
    """At least ``count`` products in the catalog, for an export long enough to kill mid-way."""
    from django.core.management import call_command

    from catalog.models import Product

    missing = count - Product.objects.using("default").count()
    if missing > 0:
        print(f"  loading {missing} products for the export", flush=True)
        quiet = {"stdout": io.StringIO(), "stderr": io.StringIO()}
        call_command("seed_catalog", "--products", str(missing), "--reviews-per-product", "0", **quiet)


def make_shoppers(prefix: str = "drill") -> tuple[list[tuple[str, list[str]]], str]:
    """The drill's shoppers, their products to review, and a staff account (idempotent)."""
    from decimal import Decimal

    from accounts import services as accounts_services
    from accounts.models import User
    from catalog.models import Category, Product

    category, _ = Category.objects.using("default").get_or_create(slug=f"{prefix}s", defaults={"name": "Drills"})
    shoppers = []
    for number in range(SHOPPERS):
        username = f"{prefix}-shopper{number}"
        if not User.objects.using("default").filter(username=username).exists():
            accounts_services.create_user(username=username, email=f"{username}@example.com", password=PASSWORD)
        slugs = [f"{prefix}-{number}-{n}" for n in range(PRODUCTS_PER_SHOPPER)]
        have = set(Product.objects.using("default").filter(slug__in=slugs).values_list("slug", flat=True))
        Product.objects.using("default").bulk_create(
            Product(category=category, name=f"Drill {number}.{n}", slug=slug, price=Decimal("9.50"), stock=5)
            for n, slug in enumerate(slugs)
            if slug not in have
        )
        shoppers.append((username, slugs))
    staff = f"{prefix}-staff"
    if not User.objects.using("default").filter(username=staff).exists():
        user = accounts_services.create_user(username=staff, email=f"{staff}@example.com", password=PASSWORD)
        User.objects.using("default").filter(pk=user.pk).update(is_staff=True)
    return shoppers, staff


def prepare(timing: Timing, with_worker: bool, patroni: bool = False) -> Rig:
    """The drills profile's herd, up, with data: services, database, worker, replicas, HAProxy.
    ``patroni``: PostgreSQL as a Patroni cluster (deploy/herd/patroni.py), else plain."""
    profile = PROFILES["drills"].with_postgres("patroni" if patroni else "plain")
    os.environ.update(profile.django_env())
    # The app replicas and the worker reach every data service through a proxy of this
    # process (deploy/faults.py): ones left running by an earlier run use dead ones.
    faults = Faults(profile)
    herd = Herd(profile, replicas=3, extra_env={**DRILL_ENV, **faults.env()}, postgres=profile.postgres_kind)
    worker = Worker(profile, extra_env=herd.extra_env)
    for process in [*herd.webs(), worker]:
        process.stop()
    herd.start_services()
    env = {"PATH": os.environ.get("PATH", ""), **profile.django_env()}
    log = profile.logs / "drills-setup.log"
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"]):
        run([str(VENV_PYTHON), "manage.py", *command], log=log, env=env, cwd=ROOT)

    import django

    django.setup()
    shoppers, staff = make_shoppers()
    if with_worker:
        worker.ensure()
    herd.start_herd_processes()
    wait_all_up(herd)
    if patroni:
        PatroniCluster(profile).resume()  # an earlier run stopped mid-drill may have left it paused
    set_replay_delay(herd, "0")
    return Rig(herd, shoppers, staff, timing, worker=worker, faults=faults)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.drills", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="shorter load and faults")
    parser.add_argument(
        "--postgres",
        choices=("patroni", "plain"),
        default="patroni",
        help="the HA tier, PostgreSQL under Patroni (the default, the one written into RELIABILITY.md), "
        "or the plain primary and streaming replica the test suite runs (printed only; "
        + ", ".join(name for name, drill in DRILLS.items() if drill.needs_patroni)
        + " left out)",
    )
    parser.add_argument("drills", nargs="*", metavar="DRILL", help=", ".join(DRILLS))
    args = parser.parse_args(argv)
    if unknown := set(args.drills) - set(DRILLS):
        parser.error(f"no drill named {', '.join(sorted(unknown))}; the drills: {', '.join(DRILLS)}")
    patroni = args.postgres == "patroni"
    names = args.drills or [name for name, drill in DRILLS.items() if patroni or not drill.needs_patroni]
    if not patroni and (needing := [name for name in names if DRILLS[name].needs_patroni]):
        parser.error(f"{', '.join(needing)} needs PostgreSQL under Patroni: not with --postgres plain")
    if PROFILES["drills"].sentinel and (alone := [name for name in names if DRILLS[name].needs_single_state_node]):
        print(f"left out: {', '.join(alone)} (the drills herd's state Redis is under Sentinel; the suite runs it)")
        names = [name for name in names if name not in alone]
        if not names:
            parser.error("no drill left to run on the drills herd")
    drills = [DRILLS[name]() for name in names]
    print(f"preparing the drills herd (profile drills, {TIERS[args.postgres]})...", flush=True)
    started = time.monotonic()
    rig = prepare(
        SHORT if args.short else FULL, with_worker=any(drill.needs_worker for drill in drills), patroni=patroni
    )
    results = []
    for drill in drills:
        results.append(run_drill(rig, drill))
        with contextlib.suppress(HerdError):
            wait_all_up(rig.herd)
    command = "`make drills`" if names == list(DRILLS) else f"`python -m deploy.drills {' '.join(names)}`"
    block = render(results, time.monotonic() - started, command, TIERS[args.postgres])
    print("\n" + block)
    if args.short or not patroni:
        print(f"\n(not written into {REPORT.name}: it holds full-length runs on the HA tier)")
    else:
        write_report(REPORT, block, full=names == list(DRILLS))
        print(f"\nwritten: {REPORT}")
    return 0 if all(result.passed for result in results) else 1


def write_report(path: Path, block: str, full: bool) -> None:
    """A full run's block replaces the drills block; a run of some drills merges its rows
    and notes into it (``merge``), the others' kept with their own date and commit."""
    text = path.read_text() if path.exists() else ""
    if not full and BEGIN in text and END in text:
        block = merge(text.split(BEGIN, 1)[1].split(END, 1)[0], block)
    replace_block(path, BEGIN, END, block)


_ROW = re.compile(r"^\| (?P<drill>[a-z0-9-]+) \|")
_NOTES = re.compile(r"^- \*\*(?P<drill>[a-z0-9-]+)\*\*$")
_HEADING = re.compile(r"^### Figures from .*, (?P<date>\d{4}-\d\d-\d\d), commit (?P<commit>.+)$")


def parts(block: str) -> tuple[str, dict[str, str], dict[str, list[str]]]:
    """A block's heading line, its rows by drill (each with its run: a row of a block
    written before rows had one takes the heading's) and its notes by drill."""
    lines = block.splitlines()
    heading = next((line for line in lines if _HEADING.match(line)), "")
    run = "{date}, {commit}".format(**_HEADING.match(heading).groupdict()) if heading else ""
    header_cells = TABLE_HEADER.splitlines()[0].count("|")
    rows: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if (row := _ROW.match(line)) and row["drill"] != "drill":
            rows[row["drill"]] = line if line.count("|") >= header_cells else f"{line} {run} |"
        elif note := _NOTES.match(line):
            current = notes.setdefault(note["drill"], [])
        elif current is not None and line.startswith("  - "):
            current.append(line)
        elif not line.strip() or line.startswith("<!--"):
            continue
        else:
            current = None
    return heading, rows, notes


def merge(old: str, new: str) -> str:
    """``new`` (a block of some drills) with the rows and notes of ``old`` for the drills it
    did not run, in the drills' order: each row keeps the date and commit of its own run.
    The heading stays the old one's (the last full run); the new run is named under it."""
    old_heading, old_rows, old_notes = parts(old)
    new_heading, new_rows, new_notes = parts(new)
    if set(old_rows) <= set(new_rows):
        return new  # the run measured every row the block had
    order = list(DRILLS)
    names = sorted({*old_rows, *new_rows}, key=lambda name: order.index(name) if name in order else len(order))
    rows = [new_rows.get(name) or old_rows[name] for name in names]
    notes = []
    for name in names:
        if name in new_notes or name in old_notes:
            notes.append(f"- **{name}**")
            notes.extend(new_notes[name] if name in new_notes else old_notes[name])
    lines = new.splitlines()
    top = lines[: lines.index(new_heading)]
    since = new_heading.removeprefix("### Figures from ")
    rest = lines[lines.index(new_heading) + 1 : lines.index(TABLE_HEADER.splitlines()[0])]
    return "\n".join(
        [
            *top,
            old_heading or new_heading,
            "",
            f"Rows of {', '.join(new_rows)} since from {since} (each row's run column says when it was measured).",
            *rest,
            TABLE_HEADER,
            *rows,
            "",
            "What each drill saw (its notes):",
            "",
            *notes,
            "",
            END if END in new else lines[-1],
        ]
    )


def render(results: list[Result], wall_seconds: float, command: str = "`make drills`", tier: str = "") -> str:
    """The generated block of docs/RELIABILITY.md: when, from which commit, the table, the notes."""
    date, commit = f"{datetime.now(UTC):%Y-%m-%d}", provenance()
    lines = [
        BEGIN,
        "<!-- Written by deploy/drills.py (make drills): edit the prose outside these markers. -->",
        "",
        f"### Figures from {command}, {date}, commit {commit}",
        "",
        f"{os.cpu_count()} cores (os.cpu_count()); {tier or TIERS['patroni']}; {wall_seconds / 60:.1f} min in all, "
        "preparing the herd included.",
        "",
        TABLE_HEADER,
        *(result.row(f"{date}, {commit}") for result in results),
        "",
        "What each drill saw (its notes):",
        "",
    ]
    for result in results:
        lines.append(f"- **{result.drill}**")
        # A note may quote a page: its tags are text here, not Markdown's HTML.
        lines.extend(f"  - {note.replace('<', '&lt;')}" for note in result.notes)
    return "\n".join([*lines, "", END])


if __name__ == "__main__":
    sys.exit(main())
