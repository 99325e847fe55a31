"""Profiles: each herd's state folder and block of ports, so several share one machine.

``local`` (the default) is the herd people open in a browser; ``test`` the private one the
tests run against (``HERD_TEST_SLOT=N`` gives each concurrent suite its own), ``bench`` and
``drills`` those of the benchmarks and the fault drills. State and logs live under
``.herd/<profile>/`` (ignored by git); a profile's ports are the local herd's plus its offset.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
IS_ROOT = os.geteuid() == 0

# Shard databases of per-user data each profile runs, in its primary's server (docs/SHARDING.md).
SHARD_DATABASES = 2


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


def others_can_enter(path: Path) -> bool:
    """Whether any user may pass through ``path`` and every folder above it (the x bit for others)."""
    return all(folder.stat().st_mode & 0o001 for folder in (path, *path.parents))


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
