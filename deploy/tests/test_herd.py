"""The herd behind the real load balancer (the processes of deploy/tests/conftest.py)."""

import hashlib
import io
import os
import signal
import time
import urllib.request

import httpx
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from deploy.herd.control import Herd
from deploy.herd.processes import pid_alive

pytestmark = [pytest.mark.herd, pytest.mark.django_db(transaction=True)]


def get(url: str) -> tuple[int, str]:
    # no-cache: past HAProxy's edge cache, to the replicas, whose spread is under test.
    request = urllib.request.Request(url, headers={"Cache-Control": "no-cache"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.headers["X-Served-By"]


def served_by(herd: Herd, requests: int) -> list[str]:
    answers = [get(herd.profile.url) for _ in range(requests)]
    assert {status for status, _ in answers} == {200}
    return [replica for _, replica in answers]


def wait_until(predicate, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"not within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_successive_requests_are_served_by_every_replica(herd):
    assert set(served_by(herd, 12)) == {"web1", "web2", "web3"}


def test_a_killed_replica_is_taken_out_within_5_seconds_and_can_be_started_again(herd, capsys):
    web1 = herd.webs()[0]
    os.kill(web1.pid(), signal.SIGKILL)

    # Requests keep succeeding while HAProxy notices: a refused connection is retried.
    seconds = wait_until(lambda: served_by(herd, 2) and herd.haproxy().server_states()["web1"].startswith("DOWN"), 5)
    assert seconds < 5
    assert set(served_by(herd, 6)) == {"web2", "web3"}

    herd.status()
    web1_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("web1 "))
    assert web1_line.split()[1] == "down"

    herd.start("web1")
    wait_until(lambda: herd.haproxy().server_states()["web1"] == "UP", 10)
    assert set(served_by(herd, 12)) == {"web1", "web2", "web3"}


def test_a_draining_replica_finishes_its_requests_and_leaves_the_rotation(herd):
    web2 = herd.webs()[1]
    os.kill(web2.pid(), signal.SIGTERM)
    wait_until(lambda: herd.haproxy().server_states()["web2"].startswith("DOWN"), 5)
    assert set(served_by(herd, 6)) == {"web1", "web3"}
    wait_until(lambda: not web2.running(), 30)
    herd.start("web2")


def test_stopping_the_herd_leaves_no_process_behind(herd):
    processes = [herd.haproxy(), *herd.webs()]
    pids = [process.pid() for process in processes]
    assert all(pid_alive(pid) for pid in pids)
    try:
        for process in processes:
            process.stop()
        left = [process.name for process, pid in zip(processes, pids, strict=True) if pid_alive(pid)]
        assert not left, f"still running: {left}"
    finally:
        herd.start_herd_processes()  # for the tests that follow


def test_the_edge_cache_serves_anonymous_pages_and_nothing_to_a_visitor_with_cookies(herd):
    url = herd.profile.url
    first = httpx.get(url)
    again = httpx.get(url)
    assert first.status_code == again.status_code == 200
    assert "X-Cache" not in first.headers and again.headers["X-Cache"] == "hit"
    assert again.text == first.text
    # Each answer names its own request, even when it comes from the cache.
    assert again.headers["X-Request-ID"] != first.headers["X-Request-ID"]
    # Caches downstream (a CDN, the browser) still learn the page varies with cookies.
    assert again.headers["Vary"] == first.headers["Vary"] == "Cookie"
    assert "public" in again.headers["Cache-Control"]

    with_session = httpx.get(url, cookies={"sessionid": "anything"})
    assert "X-Cache" not in with_session.headers
    reload = httpx.get(url, headers={"Cache-Control": "no-cache"})
    assert "X-Cache" not in reload.headers

    # Private pages, and pages that set a cookie, never enter it.
    for _ in range(2):
        login = httpx.get(url + "accounts/login/")
        assert login.status_code == 200 and "X-Cache" not in login.headers


def test_a_stored_picture_is_served_once_by_a_replica_then_only_by_the_edge(herd):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "teal").save(buffer, format="AVIF")
    data = buffer.getvalue()
    name = default_storage.save(f"products/{hashlib.sha256(data).hexdigest()}.avif", ContentFile(data))
    url = herd.profile.url + f"media/{name}"
    first = httpx.get(url)
    assert first.status_code == 200 and first.content == data and "X-Cache" not in first.headers
    repeats = [httpx.get(url, cookies={"sessionid": "anything"}), httpx.get(url)]
    for again in repeats:
        assert again.headers.get("X-Cache") == "hit" and again.content == data
        assert again.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    # A replica logs every request it runs, by its id: the repeats' ids are in no log.
    logs = "".join(web.log.read_text(errors="replace") for web in herd.webs())
    assert first.headers["X-Request-ID"] in logs
    assert not any(again.headers["X-Request-ID"] in logs for again in repeats)


def test_readiness_through_the_load_balancer_says_only_ready_and_a_probe_hears_every_check(herd):
    public = httpx.get(herd.profile.url + "readyz")
    assert public.status_code == 200
    assert public.json() == {"status": "ready"}
    direct = httpx.get(f"http://127.0.0.1:{herd.webs()[0].port}/readyz")
    assert direct.json()["checks"]["database:default"] == "ok"
