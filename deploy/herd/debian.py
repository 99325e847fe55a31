"""The Debian packages the herd runs: installed with apt-get when root, named otherwise."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from deploy.herd.processes import HerdError
from deploy.herd.profiles import IS_ROOT

DEBIAN_PACKAGES = {
    "postgresql": "postgresql",
    "redis-server": "redis-server",
    "haproxy": "haproxy",
    "rabbitmq-server": "rabbitmq-server",
}


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


def ensure_packages(extra: dict[str, str] | None = None, *, herd: bool = True) -> None:
    """Install what is missing when root; otherwise name it. ``extra``: command -> package;
    ``herd=False``: those alone, not the herd's services too."""

    def absent() -> list[str]:
        extras = [package for command, package in (extra or {}).items() if not Path(command).exists()]
        return [*(missing_packages() if herd else []), *extras]

    missing = absent()
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
    # Another herd (a concurrent suite, the bench) may be installing too: wait for dpkg's lock.
    wait = ["-o", "DPkg::Lock::Timeout=600"]
    subprocess.run(["apt-get", *wait, "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", *wait, "install", "-y", "-q", *missing], check=True, env=env, stdout=subprocess.DEVNULL)
    # Debian starts the packaged services; the herd runs private ones on its own ports.
    still_missing = absent()
    if still_missing:
        raise HerdError(f"apt-get did not provide: {' '.join(still_missing)}")
