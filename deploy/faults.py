"""Fault-injecting TCP proxies between the app and its data services, for the drills.

``Faults(profile, services)`` runs one asyncio proxy per named data service on loopback
(an ephemeral port each; by default every service the app dials at a fixed address, which
under Sentinel leaves out the state Redis: the app goes where the Sentinels say), in a
thread of its own; ``env(database)`` gives the URLs of ``Profile.django_env`` rewritten to
pass through them, for the app replicas and worker started with it. ``set(service, mode,
delay_ms)`` switches one proxy (``injected`` for a block): ``pass``; ``delay`` (each chunk
from the service held ``delay_ms``: every round trip that much slower); ``blackhole``
(connections accepted, nothing forwarded either way until the mode changes: a partition);
``refuse`` (open connections reset, new ones reset at once). Loopback only; no other
process of the machine is slowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from deploy.herd.profiles import (
    POSTGRES_PORT,
    POSTGRES_REPLICA_PORT,
    RABBITMQ_PORT,
    REDIS_CACHE_PORT,
    REDIS_STATE_PORT,
    Profile,
)

# Data service (named as deploy.herd.services names its process) -> its local-herd port.
SERVICES = {
    "postgres-primary": POSTGRES_PORT,
    "postgres-replica": POSTGRES_REPLICA_PORT,
    "redis-state": REDIS_STATE_PORT,
    "redis-cache": REDIS_CACHE_PORT,
    "rabbitmq": RABBITMQ_PORT,
}
MODES = ("pass", "delay", "blackhole", "refuse")
HOST = "127.0.0.1"
CHUNK = 65536


def upstream_port(profile: Profile, service: str) -> int:
    """The port ``service`` answers on in ``profile``: under Patroni, PostgreSQL's are
    HAProxy's listeners for the primary and the replicas."""
    if service == "postgres-primary":
        return profile.postgres_ports[0]
    if service == "postgres-replica":
        return profile.postgres_ports[1]
    return profile.port(SERVICES[service])


def fixed_address_services(profile: Profile) -> tuple[str, ...]:
    """The data services the app of ``profile`` dials at an address of its environment."""
    return tuple(name for name in SERVICES if not (profile.sentinel and name == "redis-state"))


class Proxy:
    """One listening port forwarding to one service, in one of ``MODES``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.delay = 0.0
        self.port = 0
        self.server: asyncio.Server | None = None
        self.transports: set[asyncio.Transport] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.transport.abort()
            return
        self.transports.add(writer.transport)
        upstream: asyncio.StreamWriter | None = None
        try:
            while self.mode == "blackhole":  # accepted, never forwarded: not even connected
                await asyncio.sleep(0.05)
            up_reader, upstream = await asyncio.open_connection(HOST, self.upstream_port)
            self.transports.add(upstream.transport)
            pumps = [
                asyncio.ensure_future(self.pump(reader, upstream, from_service=False)),
                asyncio.ensure_future(self.pump(up_reader, writer, from_service=True)),
            ]
            _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pending:
                pump.cancel()
        except OSError:
            pass  # the service itself is away: the client sees its connection reset
        finally:
            for side in (writer, upstream):
                if side is not None:
                    self.transports.discard(side.transport)
                    side.transport.abort()

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_service: bool) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK):
                while self.mode == "blackhole":  # held, as a partition holds it
                    await asyncio.sleep(0.05)
                if self.mode == "refuse":
                    return
                if from_service and self.mode == "delay" and self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()

    def reset_all(self) -> None:
        for transport in list(self.transports):
            transport.abort()
        self.transports.clear()


class Faults:
    """A proxy per data service of ``profile`` named in ``services``, in a thread of its own."""

    def __init__(self, profile: Profile, services: tuple[str, ...] | None = None) -> None:
        self.profile = profile
        services = fixed_address_services(profile) if services is None else services
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="faults", daemon=True)
        self.thread.start()
        self.proxies: dict[str, Proxy] = {}
        for name in services:
            proxy = Proxy(upstream_port(profile, name))
            asyncio.run_coroutine_threadsafe(proxy.start(), self.loop).result(10)
            self.proxies[name] = proxy

    def env(self, database: str = "herd") -> dict[str, str]:
        """The profile's URLs that name a proxied service, rewritten to its proxy."""
        changed = {}
        for key, value in self.profile.django_env(database).items():
            new = value
            for proxy in self.proxies.values():
                new = new.replace(f"{HOST}:{proxy.upstream_port}/", f"{HOST}:{proxy.port}/")
            if new != value:
                changed[key] = new
        return changed

    def set(self, service: str, mode: str, delay_ms: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        proxy = self.proxies[service]

        def switch() -> None:
            proxy.delay = delay_ms / 1000
            proxy.mode = mode
            if mode == "refuse":
                proxy.reset_all()

        self.loop.call_soon_threadsafe(switch)

    @contextlib.contextmanager
    def injected(self, service: str, mode: str, delay_ms: float = 0.0) -> Iterator[None]:
        self.set(service, mode, delay_ms)
        try:
            yield
        finally:
            self.set(service, "pass")

    def close(self) -> None:
        def stop() -> None:
            for proxy in self.proxies.values():
                proxy.reset_all()
                if proxy.server is not None:
                    proxy.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(5)
