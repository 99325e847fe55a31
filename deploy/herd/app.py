"""The processes that run this repository's code from the virtualenv: the app replicas
(``manage.py serve``, HTTP and WebSockets) and the Dramatiq worker, each with the profile's
environment (``Profile.django_env``), its own temporary folder and process group.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from deploy.herd.processes import HerdError, Process, http_status, spawn, wait_for
from deploy.herd.profiles import VENV_PYTHON, Profile


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
