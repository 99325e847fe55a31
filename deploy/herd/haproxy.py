"""HAProxy in front of the app replicas: deploy/haproxy.cfg.template filled in (for the
local herd and for compose), the process, and its runtime API (server states, adding,
draining and deleting servers without a reload).
"""

from __future__ import annotations

import csv
import io
import itertools
import socket
import string
import time

from deploy.herd.app import Web
from deploy.herd.processes import HerdError, Process, port_open, run, wait_for
from deploy.herd.profiles import HAPROXY_EDGE_ADMIN_PORT, HAPROXY_STATS_PORT, ROOT, Profile


def render_haproxy_config(
    *,
    bind: str,
    stats_bind: str,
    stats_socket: str,
    edge_admin: str,
    servers: list[tuple[str, str]] | str,
    behind_router: str = "",
) -> str:
    """deploy/haproxy.cfg.template filled in: one template for the local herd, compose and
    the cluster's edge.

    ``edge_admin`` is where the app replicas purge the edge cache (``ipv4@host:port``: the
    runtime API the app's ``HERD_EDGE_ADMIN`` names). ``servers`` are (name, "host:port")
    pairs; a host name that does not resolve yet is resolved later through the template's
    ``resolvers`` section. A string instead is the backend's server lines as they are (the
    cluster's ``server-template``). ``behind_router`` is the frontend's first lines where a
    router that ends TLS is in front (the cluster's edge): they set ``txn.behind_router``
    to keep its ``X-Forwarded-Proto`` and take the client's address from its
    ``X-Forwarded-For``; empty where HAProxy is the first hop.
    """
    template = string.Template((ROOT / "deploy" / "haproxy.cfg.template").read_text())
    return template.substitute(
        BIND=bind,
        STATS_BIND=stats_bind,
        STATS_SOCKET=stats_socket,
        EDGE_ADMIN=edge_admin,
        SERVERS=servers
        if isinstance(servers, str)
        else "\n".join(f"    server {name} {address} check" for name, address in servers),
        BEHIND_ROUTER=behind_router,
    )


class HAProxy(Process):
    name = "haproxy"

    def __init__(self, profile: Profile, replicas: list[int]) -> None:
        super().__init__(profile)
        self.replicas = replicas
        self.port = profile.lb_port
        self.stats_port = profile.port(HAPROXY_STATS_PORT)
        self.edge_admin_port = profile.port(HAPROXY_EDGE_ADMIN_PORT)
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
            edge_admin=f"ipv4@127.0.0.1:{self.edge_admin_port}",
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
