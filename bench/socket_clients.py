"""WebSocket clients for the bench, in processes of their own (no Django here).

``hold(url, headers, sockets, processes, marker)`` opens ``sockets`` notification sockets
spread over ``processes`` client processes (each with its own asyncio loop and websockets
client, its open-file limit raised to the hard limit), tells the caller when all are open,
and records, by the wall clock, when each socket received the ``notification.read`` event
whose ``unread`` is ``marker``. ``listen(url, headers)`` is one socket in a process of its
own that records when each job's ``succeeded`` event arrived, so the load generator's own
threads never delay the time it reads.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import time
from dataclasses import dataclass, field

import websockets

OPENING_AT_ONCE = 100  # connects in flight per client process
WAIT_SECONDS = 10.0  # how long a socket waits for the event once all are open


def raise_file_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@dataclass
class Held:
    """What one client process saw."""

    opened: int = 0
    failed: int = 0
    first_error: str = ""
    open_seconds: float = 0.0
    arrivals: list[float] = field(default_factory=list)  # wall clock, one per socket that got the event


async def _hold(url: str, headers: dict, sockets: int, marker: int, ready, go) -> Held:
    held = Held()
    connections = []
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def open_one() -> None:
        async with gate:
            try:
                connections.append(
                    await websockets.connect(url, additional_headers=headers, open_timeout=60, ping_interval=None)
                )
                held.opened += 1
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as error:
                held.failed += 1
                held.first_error = held.first_error or f"{type(error).__name__}: {error}"[:200]

    started = time.monotonic()
    await asyncio.gather(*(open_one() for _ in range(sockets)))
    held.open_seconds = time.monotonic() - started

    async def wait(connection) -> float | None:
        try:
            while True:
                event = json.loads(await connection.recv())
                if event.get("type") == "notification.read" and event.get("unread") == marker:
                    return time.time()
        except (OSError, websockets.exceptions.WebSocketException):
            return None

    waits = [asyncio.ensure_future(wait(c)) for c in connections]
    ready.put((held.opened, held.failed))
    await asyncio.to_thread(go.wait, 120)
    done, pending = await asyncio.wait(waits, timeout=WAIT_SECONDS) if waits else (set(), set())
    for task in pending:
        task.cancel()
    held.arrivals = [task.result() for task in done if task.result() is not None]
    await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
    return held


def _client(url: str, headers: dict, sockets: int, marker: int, ready, go, results) -> None:
    raise_file_limit()
    results.put(asyncio.run(_hold(url, headers, sockets, marker, ready, go)))


def hold(url: str, headers: dict, sockets: int, processes: int, marker: int, send) -> tuple[float, list[Held]]:
    """Open the sockets, call ``send()`` once all are open (or failed), and return the wall
    clock just before ``send`` with what each client process saw."""
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    counts = [sockets // processes + (1 if i < sockets % processes else 0) for i in range(processes)]
    workers = [
        context.Process(target=_client, args=(url, headers, count, marker, ready, go, results), daemon=True)
        for count in counts
        if count
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=300)
        time.sleep(0.5)  # the last connects settle on the replica
        sent = time.time()
        go.set()
        send()
        held = [results.get(timeout=WAIT_SECONDS + 120) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    return sent, held


async def _listen(url: str, headers: dict, expected: int, timeout: float, ready) -> dict[str, float]:
    received: dict[str, float] = {}
    async with websockets.connect(url, additional_headers=headers, max_queue=None) as socket:
        ready.put(True)
        deadline = time.monotonic() + timeout
        while len(received) < expected and time.monotonic() < deadline:
            try:
                event = json.loads(await asyncio.wait_for(socket.recv(), timeout=deadline - time.monotonic()))
            except TimeoutError:
                break
            if event.get("type") == "job.progress" and event.get("state") == "succeeded":
                received[event["job"]] = time.time()
    return received


def _listener(url: str, headers: dict, expected: int, timeout: float, ready, results) -> None:
    results.put(asyncio.run(_listen(url, headers, expected, timeout, ready)))


def listen(url: str, headers: dict, expected: int, timeout: float, while_open) -> tuple[dict[str, float], object]:
    """One socket in its own process: run ``while_open()`` once it is open, and return when
    (wall clock) each job's ``succeeded`` event arrived, with what ``while_open`` returned."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    worker = context.Process(target=_listener, args=(url, headers, expected, timeout, ready, results), daemon=True)
    worker.start()
    try:
        ready.get(timeout=60)
        returned = while_open()
        received = results.get(timeout=timeout + 60)
    finally:
        worker.join(timeout=30)
        if worker.is_alive():
            worker.kill()
    return received, returned
