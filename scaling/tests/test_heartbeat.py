"""The worker's heartbeat: fresh while its threads live, stale once one died (the liveness
probe then fails), fresh again through a graceful shutdown."""

from __future__ import annotations

import time

import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from scaling import heartbeat
from scaling.queue import WorkerHeartbeat

BEAT = 0.05
MAX_AGE = 0.5


def started_worker(settings, tmp_path, threads: int) -> Worker:
    """A Dramatiq worker of ``threads`` threads on a stub broker, with the heartbeat."""
    settings.HERD_WORKER_HEARTBEAT_FILE = str(tmp_path / "heartbeat")
    settings.HERD_WORKER_HEARTBEAT_SECONDS = BEAT
    broker = StubBroker(middleware=[WorkerHeartbeat()])
    broker.declare_queue("default")
    worker = Worker(broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    return worker


def stopped(worker: Worker) -> None:
    worker.stop(timeout=2000)
    worker.broker.close()


@pytest.fixture
def worker(settings, tmp_path):
    worker = started_worker(settings, tmp_path, threads=2)
    yield worker
    stopped(worker)


def probe(settings) -> int:
    return heartbeat.main([settings.HERD_WORKER_HEARTBEAT_FILE, str(MAX_AGE)])


def wait_for(condition, seconds: float = 3.0) -> bool:
    until = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > until:
            return False
        time.sleep(0.02)
    return True


def test_the_probe_passes_while_every_thread_lives_and_fails_once_one_died(worker, settings):
    assert wait_for(lambda: probe(settings) == 0)
    time.sleep(2 * MAX_AGE)
    assert probe(settings) == 0  # still beating
    dead = worker.workers[0]
    dead.stop()
    dead.join(2)
    assert not dead.is_alive()
    assert wait_for(lambda: probe(settings) == 1), "the heartbeat went on with a dead worker thread"


def test_a_graceful_shutdown_keeps_beating(worker, settings):
    worker.workers[0].stop()
    worker.workers[0].join(2)
    assert wait_for(lambda: probe(settings) == 1)
    worker.broker.emit_before("worker_shutdown", worker)  # SIGTERM: draining on purpose
    assert wait_for(lambda: probe(settings) == 0)


def test_no_heartbeat_file_fails_the_probe(tmp_path):
    assert heartbeat.main([str(tmp_path / "never-written"), "60"]) == 1


def test_the_heartbeat_thread_ends_with_its_worker(settings, tmp_path):
    import threading

    worker = started_worker(settings, tmp_path, threads=1)
    assert wait_for(lambda: "herd-heartbeat" in {t.name for t in threading.enumerate()})
    stopped(worker)
    assert wait_for(lambda: "herd-heartbeat" not in {t.name for t in threading.enumerate()})
