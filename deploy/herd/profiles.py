"""Profiles: each herd's state folder and block of ports, so several share one machine.

``local`` (the default) is the herd people open in a browser; ``test`` the private one the
tests run against (``HERD_TEST_SLOT=N`` gives each concurrent suite its own); ``bench``,
``drills`` and ``audit`` those of the benchmarks, the fault drills and ``make audit``. The
local and the drills herds run their state Redis under Sentinel; the others keep one node,
and the suite's Sentinel test and failover drill run ``sentinel_profile`` beside the test
herd. State and logs live under ``.herd/<profile>/`` (ignored by git); a profile's ports
are the local herd's plus its offset, and no two profiles share one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
IS_ROOT = os.geteuid() == 0

# Shard databases of per-user data each profile runs, in its primary's server (docs/SHARDING.md).
SHARD_DATABASES = 2

# The local herd's ports; every other profile's are these plus its port_offset.
POSTGRES_PORT = 55432
POSTGRES_REPLICA_PORT = 55433
RABBITMQ_PORT = 55672  # AMQP
RABBITMQ_DIST_PORT = 55673  # Erlang distribution (epmd's 4369 lies below the ephemeral range)
REDIS_STATE_PORT = 56379
REDIS_CACHE_PORT = 56380
# Where Sentinel watches the state Redis (``Profile.sentinel``): its second node and the
# three Sentinels.
REDIS_STATE_2_PORT = 56381
SENTINEL_PORTS = (56391, 56392, 56393)
SENTINEL_MASTER = "herd-state"
HAPROXY_PORT = 8000  # app replica N listens on HAPROXY_PORT + N
HAPROXY_STATS_PORT = 8404
HAPROXY_EDGE_ADMIN_PORT = 8405  # the runtime API the app purges the edge cache through
# PostgreSQL under Patroni (``--postgres patroni``, deploy/herd/patroni.py): the app reaches
# the primary and the replicas through HAProxy's two listeners; behind them two members,
# each a PostgreSQL server and its Patroni's REST API, and the three etcd members.
PATRONI_PRIMARY_PORT = 55434  # HAProxy: the member Patroni's /primary answers 200 for
PATRONI_REPLICA_PORT = 55435  # HAProxy: members /replica?lag=... says 200 for, else the primary
PATRONI_POSTGRES_PORTS = (55436, 55437)
PATRONI_REST_PORTS = (55438, 55439)
ETCD_CLIENT_PORTS = (55440, 55441, 55442)
ETCD_PEER_PORTS = (55443, 55444, 55445)
LISTEN_PORTS = (
    POSTGRES_PORT,
    POSTGRES_REPLICA_PORT,
    PATRONI_PRIMARY_PORT,
    PATRONI_REPLICA_PORT,
    *PATRONI_POSTGRES_PORTS,
    *PATRONI_REST_PORTS,
    *ETCD_CLIENT_PORTS,
    *ETCD_PEER_PORTS,
    RABBITMQ_PORT,
    RABBITMQ_DIST_PORT,
    REDIS_STATE_PORT,
    REDIS_CACHE_PORT,
    REDIS_STATE_2_PORT,
    *SENTINEL_PORTS,
    HAPROXY_PORT,
    HAPROXY_STATS_PORT,
    HAPROXY_EDGE_ADMIN_PORT,
)
# App replicas whose ports are reserved ahead (``scale`` beyond reserves more).
RESERVED_REPLICAS = 16
# HERD_TEST_SLOT 0 to 9: the slots whose ports all lie below 65536.
TEST_SLOTS = 10


@dataclass(frozen=True)
class Profile:
    name: str
    port_offset: int
    # The test profile trades durability for speed; the local herd keeps it.
    durable: bool
    # The state Redis as two nodes watched by three Sentinels (docs/RELIABILITY.md);
    # otherwise one node.
    sentinel: bool = False
    # PostgreSQL as a Patroni cluster behind HAProxy (deploy/herd/patroni.py) instead of
    # the plain primary and streaming replica; opt-in (``up --postgres patroni``).
    patroni: bool = False

    def with_postgres(self, kind: str) -> Profile:
        """This profile with PostgreSQL run as ``kind``: ``plain`` or ``patroni``."""
        return replace(self, patroni=kind == "patroni")

    @property
    def postgres_kind(self) -> str:
        return "patroni" if self.patroni else "plain"

    @property
    def postgres_ports(self) -> tuple[int, int]:
        """Where the app finds the primary and the replicas: the servers themselves, or
        under Patroni HAProxy's two listeners."""
        if self.patroni:
            return self.port(PATRONI_PRIMARY_PORT), self.port(PATRONI_REPLICA_PORT)
        return self.port(POSTGRES_PORT), self.port(POSTGRES_REPLICA_PORT)

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
        return outside_the_clone(Path("/var/lib/herd")) / self.name

    @property
    def run(self) -> Path:
        return self.state / "run"

    def port(self, base: int) -> int:
        return base + self.port_offset

    @property
    def lb_port(self) -> int:
        return self.port(HAPROXY_PORT)

    def web_port(self, number: int) -> int:
        return self.lb_port + number

    def ports(self, replicas: int = RESERVED_REPLICAS) -> set[int]:
        """Every port this profile's processes listen on, with up to ``replicas`` app replicas."""
        return {*(self.port(base) for base in LISTEN_PORTS), *(self.web_port(n) for n in range(1, replicas + 1))}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}/"

    def django_env(self, database: str = "herd") -> dict[str, str]:
        """The environment every Django process of this profile runs with."""
        pg, pg_replica = self.postgres_ports
        redis_state, redis_cache = self.port(REDIS_STATE_PORT), self.port(REDIS_CACHE_PORT)
        return {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_ENV": "development",
            "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1,[::1]",
            "DJANGO_STATIC_ROOT": str(self.state / "static"),
            "DATABASE_URL": f"postgres://herd@127.0.0.1:{pg}/{database}",
            "DATABASE_REPLICA_URLS": f"postgres://herd@127.0.0.1:{pg_replica}/{database}",
            # Per-user data (jobs, notifications) on shard databases in the same server.
            "SHARD_DATABASE_URLS": ",".join(f"postgres://herd@127.0.0.1:{pg}/{name}" for name in shard_names(database)),
            "SHARD_REPLICA_URLS": ",".join(
                f"postgres://herd@127.0.0.1:{pg_replica}/{name}" for name in shard_names(database)
            ),
            "REDIS_STATE_URL": f"redis://127.0.0.1:{redis_state}/0",
            **(self.sentinel_env() if self.sentinel else {}),
            "REDIS_CHANNELS_URL": f"redis://127.0.0.1:{redis_state}/1",
            "REDIS_CACHE_URL": f"redis://127.0.0.1:{redis_cache}/0",
            "BROKER_URL": f"amqp://guest:guest@127.0.0.1:{self.port(RABBITMQ_PORT)}/%2F",
            "HERD_DRAIN_SECONDS": "3",
            # HAProxy's edge cache, purged after each write (scaling/web/edge.py).
            "HERD_EDGE_ADMIN": f"127.0.0.1:{self.port(HAPROXY_EDGE_ADMIN_PORT)}",
            "PYTHONUNBUFFERED": "1",
        }

    def sentinel_env(self) -> dict[str, str]:
        """Where the app finds the state Redis through Sentinel, and how many replicas a
        session save waits for (``scaling.web.sessions``)."""
        return {
            "REDIS_STATE_SENTINELS": ",".join(f"127.0.0.1:{self.port(port)}" for port in SENTINEL_PORTS),
            "REDIS_STATE_MASTER": SENTINEL_MASTER,
            "HERD_SESSION_REPLICAS": "1",
        }


def sentinel_profile(profile: Profile) -> Profile:
    """A profile beside ``profile`` whose state Redis runs under Sentinel: the test suite's
    failover test runs it next to the test herd's single node. At +50 its Sentinels were
    the next slot's etcd ports; +70 shares no port with any profile."""
    return Profile(f"{profile.name}-sentinel", port_offset=profile.port_offset + 70, durable=False, sentinel=True)


def shard_names(database: str) -> list[str]:
    """The shard databases beside ``database`` (``herd_shard1``, ``herd_shard2``); the tests'
    ``test_herd`` has ``test_herd_shard1``..., the names Django gives their test databases."""
    return [f"{database}_shard{number}" for number in range(1, SHARD_DATABASES + 1)]


def test_profile(slot: int) -> Profile:
    """The test profile of ``HERD_TEST_SLOT=slot``: slots 1, 2... give a second, third... test
    herd on ports and folders of its own, so suites can run side by side on one machine."""
    if slot == 0:
        return Profile("test", port_offset=100, durable=False)
    return Profile(f"test{slot}", port_offset=1000 * slot, durable=False)


PROFILES = {
    "local": Profile("local", port_offset=0, durable=True, sentinel=True),
    "test": test_profile(int(os.environ.get("HERD_TEST_SLOT", "0") or 0)),
    "bench": Profile("bench", port_offset=200, durable=False),
    "drills": Profile("drills", port_offset=300, durable=False, sentinel=True),
    # 400 to 700 would put app replicas on the stats and edge-admin ports of the profiles above.
    "audit": Profile("audit", port_offset=800, durable=False),
}


def every_profile() -> list[Profile]:
    """Every profile that may run on this machine: the named ones and each test slot's."""
    tests = [test_profile(slot) for slot in range(TEST_SLOTS)]
    return [*PROFILES.values(), *tests, *(sentinel_profile(profile) for profile in tests)]


def outside_the_clone(parent: Path) -> Path:
    """This clone's own folder under ``parent``, named after it (``<clone>-<hash>``)."""
    return parent / f"{ROOT.name}-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]}"


def others_can_enter(path: Path) -> bool:
    """Whether any user may pass through ``path`` and every folder above it (the x bit for others)."""
    return all(folder.stat().st_mode & 0o001 for folder in (path, *path.parents))


# The services' ports lie inside Linux's ephemeral range (32768-60999), where any outgoing
# connection may take one as its local port (and keep it for hours) before a service binds it.
RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


def reserve_ports(replicas: int = RESERVED_REPLICAS) -> None:
    """Keep every port of every profile out of the ephemeral range, in one write, before a
    herd starts anything: a profile started later (the bench herd after hours of test suites)
    finds its ports free. ``replicas``: app replicas per profile, if more than reserved ahead.
    As root; else a no-op."""
    if not IS_ROOT:
        return
    replicas = max(replicas, RESERVED_REPLICAS)
    wanted = set().union(*(profile.ports(replicas) for profile in every_profile()))
    try:
        current = port_set(RESERVED_PORTS.read_text())
        if not wanted <= current:
            RESERVED_PORTS.write_text(port_ranges(current | wanted))
    except (OSError, ValueError):
        pass  # a container without a writable /proc/sys: the race stays, rarely lost


def port_set(text: str) -> set[int]:
    """The ports of a list such as ``ip_local_reserved_ports`` holds: ``8000,55432-55433``."""
    ports: set[int] = set()
    for part in filter(None, text.strip().split(",")):
        first, _, last = part.partition("-")
        ports.update(range(int(first), int(last or first) + 1))
    return ports


def port_ranges(ports: set[int]) -> str:
    """``ports`` as such a list, consecutive ports as one range (the file takes a page at most)."""
    ranges: list[list[int]] = []
    for port in sorted(ports):
        if ranges and ranges[-1][1] == port - 1:
            ranges[-1][1] = port
        else:
            ranges.append([port, port])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in ranges)
