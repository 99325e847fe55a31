"""One process of the herd, and the helpers that start, find, check and stop processes.

``Process`` is the contract every service and app process follows: ``start``, ``ensure``
(start unless healthy), ``healthy``, ``stop``; a pid file under the profile's ``run/`` and
a log under its ``logs/``. A step that fails raises ``HerdError`` naming what and its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from deploy.herd.profiles import ROOT, Profile


class HerdError(Exception):
    """A step of the herd failed; the message says which and where its log is."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


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
