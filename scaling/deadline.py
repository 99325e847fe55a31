"""Answers with a deadline from code that may hang (a partitioned or stopped server).

A ``Worker`` is one daemon thread that runs one call at a time: while a call is still
running, asking again returns the same ``Future`` rather than starting another, so a
server that never answers costs one stuck thread, never a pile of them, and never blocks
the process' exit. ``answers`` runs several named calls on their workers at once and
waits for them all until one deadline. Used by ``scaling.ops.health`` and
``scaling.db.replicas``.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Any


class Worker:
    """One daemon thread running the calls given to ``submit``, one at a time."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._future: Future | None = None
        self._lock = threading.Lock()
        self.pid = os.getpid()  # a forked child has no copy of the thread: it makes its own
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        while True:
            call, future = self._calls.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as error:  # the caller gets it from the future
                future.set_exception(error)

    def submit(self, call: Callable[[], Any]) -> Future:
        """``call`` on this worker's thread; the call already running instead, if one is."""
        with self._lock:
            if self._future is None or self._future.done():
                self._future = Future()
                self._calls.put((call, self._future))
            return self._future


class Workers:
    """A ``Worker`` per name, made on first use."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._workers: dict[str, Worker] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Worker:
        with self._lock:
            if name not in self._workers or self._workers[name].pid != os.getpid():
                self._workers[name] = Worker(f"{self._prefix}:{name}")
            return self._workers[name]

    def answers(self, calls: dict[str, Callable[[], str]], deadline: float) -> dict[str, str]:
        """Each call's answer, run concurrently on its own worker; a call that has not
        answered within ``deadline`` seconds (or raised) answers ``"error: ..."``."""
        futures = {name: self[name].submit(call) for name, call in calls.items()}
        wait(futures.values(), timeout=deadline)
        answers = {}
        for name, future in futures.items():
            if not future.done():
                answers[name] = f"error: no answer within {deadline:g}s"
            elif (error := future.exception()) is not None:
                answers[name] = f"error: {type(error).__name__}: {error}"
            else:
                answers[name] = future.result()
        return answers
