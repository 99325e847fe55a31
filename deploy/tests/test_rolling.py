"""Restarting and resizing the herd while it serves: nothing fails, nothing is lost.

Uses the herd of deploy/tests/conftest.py (web1..web3 behind HAProxy) and leaves it at
three replicas. A steady load of logged-in visitors reads pages and writes reviews
through HAProxy while ``Herd.rolling_restart()`` and ``Herd.scale()`` run; every
answer must be a 2xx or 3xx, every saved review must be in the database, and every
profile page must still know its visitor. The WebSocket test starts a replica of its
own (web9) and stops it.

The SIGTERM-only restart does what a cluster does, with no help from HAProxy's runtime
API: each replica in turn gets SIGTERM and must take itself out (``/readyz`` 503, so
HAProxy's own checks mark it DOWN while it still serves), finish a request still in
flight when it stops accepting, and exit; logged-in shoppers and anonymous visitors
(some answered by the edge cache, some past it) notice nothing.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import threading
import time
from decimal import Decimal
from urllib.parse import urlencode

import httpx
import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from accounts.tests.factories import PASSWORD, make_user
from catalog import services as catalog_services
from catalog.models import Review
from deploy.herd.app import Web
from deploy.herd.control import Herd
from deploy.herd.processes import pid_alive, port_open
from deploy.load import CSRF, Browser, Load
from deploy.visitor import Visitor

pytestmark = [
    pytest.mark.herd,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("clear_login_throttles"),
]

VISITORS = 3
PRODUCTS_PER_VISITOR = 120


def served_by(herd: Herd) -> str:
    """The replica that answers the home page (past HAProxy's edge cache)."""
    return httpx.get(herd.profile.url, headers={"Cache-Control": "no-cache"}).headers["X-Served-By"]


def steady_load(herd: Herd, shoppers: list[tuple[str, list[str]]], browsers: int = 0) -> Load:
    return Load(herd.profile.url, shoppers, password=PASSWORD, browsers=browsers)


@pytest.fixture
def shoppers(wait_for_replicas) -> list[tuple[str, list[str]]]:
    category = catalog_services.create_category(name="Rolling", slug="rolling")
    made = []
    for visitor in range(VISITORS):
        username = f"shopper{visitor}"
        make_user(username)
        slugs = []
        for number in range(PRODUCTS_PER_VISITOR):
            slug = f"rolling-{visitor}-{number}"
            catalog_services.create_product(
                category=category, name=f"Rolling {visitor}.{number}", slug=slug, price=Decimal("9.50"), stock=5
            )
            slugs.append(slug)
        made.append((username, slugs))
    wait_for_replicas()
    return made


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.05)


def replicas_in_rotation(herd: Herd) -> set[str]:
    return {name for name, state in herd.haproxy().server_states().items() if name != "BACKEND" and state == "UP"}


def test_a_rolling_restart_fails_no_request_loses_no_write_and_logs_nobody_out(herd, shoppers):
    old_pids = {web.name: web.pid() for web in herd.webs()}
    with steady_load(herd, shoppers) as load:
        time.sleep(1)  # some load before the first replica goes
        herd.rolling_restart()
        time.sleep(1)  # and some after the last one is back
    load.check_everyone_still_logged_in()

    report = load.report
    assert report.failures == [], f"{len(report.failures)} of {report.requests} requests failed"
    assert report.requests > 200
    assert len(report.saved_reviews) > 20
    stored = set(Review.objects.using("default").filter(text__in=report.saved_reviews).values_list("text", flat=True))
    assert set(report.saved_reviews) - stored == set(), "saved (302) but not in the database"

    new_pids = {web.name: web.pid() for web in herd.webs()}
    assert all(new_pids[name] != old_pids[name] for name in old_pids), "every replica was restarted"
    assert not any(pid_alive(pid) for pid in old_pids.values())
    assert replicas_in_rotation(herd) == {"web1", "web2", "web3"}


class EdgeCachedBrowser(Browser):
    """An anonymous visitor as most are, without ``Cache-Control: no-cache``: HAProxy's edge
    cache answers what it holds (``X-Cache: hit``), a replica the rest."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        del self.visitor.client.headers["Cache-Control"]
        self.edge_hits = self.past_the_edge = 0

    def step(self) -> None:
        path = self.paths[self.number % len(self.paths)]
        self.number += 1
        response = self.request("GET", path)
        if response is not None:
            if response.headers.get("X-Cache") == "hit":
                self.edge_hits += 1
            else:
                self.past_the_edge += 1
        self.visitor.client.cookies.clear()


class SlowReview(threading.Thread):
    """A review POST sent straight to one replica, its body held back until that replica
    stops accepting connections: a request in flight when the replica stops."""

    def __init__(self, visitor: Visitor, web: Web, slug: str, text: str) -> None:
        super().__init__(daemon=True, name=f"slow review on {web.name}")
        self.web, self.text, self.status_line = web, text, ""
        page = visitor.get(f"/p/{slug}/", port=web.port)
        token = CSRF.search(page.text)
        assert token, f"no review form on {web.name} ({page.status_code})"
        self.body = urlencode({"csrfmiddlewaretoken": token.group(1), "rating": "4", "text": text}).encode()
        cookies = "; ".join(f"{name}={value}" for name, value in visitor.client.cookies.items())
        self.head = (
            f"POST /p/{slug}/review/ HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\nCookie: {cookies}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        ).encode()
        self.sock = socket.create_connection(("127.0.0.1", web.port), timeout=60)
        self.sock.sendall(self.head + self.body[:10])  # the request has begun

    def run(self) -> None:
        try:
            deadline = time.monotonic() + settings.HERD_DRAIN_SECONDS + 15
            while port_open(self.web.port) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.sock.sendall(self.body[10:])
            answer = b""
            while chunk := self.sock.recv(65536):
                answer += chunk
            self.status_line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
        except OSError as error:
            self.status_line = f"{type(error).__name__}: {error}"
        finally:
            self.sock.close()


def restart_by_sigterm_alone(herd: Herd, web: Web, in_flight: SlowReview) -> bool:
    """SIGTERM, as the kubelet sends it, then start it again once it exited; no runtime API.
    True when HAProxy's checks took it out while it still accepted connections."""
    lb = herd.haproxy()
    pid = web.pid()
    in_flight.start()
    os.killpg(pid, signal.SIGTERM)
    taken_out_while_serving = None

    def out_of_rotation() -> bool:
        nonlocal taken_out_while_serving
        if lb.out_of_rotation(web.name):
            taken_out_while_serving = port_open(web.port)  # asked after HAProxy's answer
            return True
        return False

    wait_until(out_of_rotation, settings.HERD_DRAIN_SECONDS + 25, f"haproxy takes {web.name} out")
    wait_until(lambda: not pid_alive(pid), settings.HERD_DRAIN_SECONDS + 25, f"{web.name} exits")
    in_flight.join(timeout=30)
    web.pidfile.unlink(missing_ok=True)
    web.start()
    herd.wait_in_rotation(lb, [web.name])
    return bool(taken_out_while_serving)


def test_a_sigterm_only_restart_under_load_fails_no_request_and_loses_no_write(herd, shoppers, wait_for_replicas):
    """What Kubernetes relies on: the replica's own drain, not the load balancer's API."""
    make_user("latecomer")
    wait_for_replicas()
    latecomer = Visitor(herd.profile.url)
    assert latecomer.log_in("latecomer", PASSWORD).status_code == 302
    old_pids = {web.name: web.pid() for web in herd.webs()}
    load = steady_load(herd, shoppers, browsers=1)
    edge = EdgeCachedBrowser(herd.profile.url, "anonymous-edge", shoppers[0][1], load.report, load.stop)
    load.browsers.append(edge)
    taken_out_while_serving, in_flight = {}, []
    with load:
        time.sleep(1)
        for number, web in enumerate(herd.webs()):
            slow = SlowReview(latecomer, web, shoppers[0][1][number], f"in flight on {web.name} ({time.time_ns()})")
            taken_out_while_serving[web.name] = restart_by_sigterm_alone(herd, web, slow)
            in_flight.append(slow)
        time.sleep(1)
    load.check_everyone_still_logged_in()

    assert taken_out_while_serving == {"web1": True, "web2": True, "web3": True}, "readiness 503 before it stops"
    assert [slow.status_line for slow in in_flight] == ["HTTP/1.1 302 Found"] * 3, "requests in flight finish"
    report = load.report
    assert report.failures == [], f"{len(report.failures)} of {report.requests} requests failed"
    assert report.requests > 200 and len(report.saved_reviews) > 20
    assert edge.edge_hits > 0 and edge.past_the_edge > 0, (edge.edge_hits, edge.past_the_edge)
    written = [*report.saved_reviews, *(slow.text for slow in in_flight)]
    stored = set(Review.objects.using("default").filter(text__in=written).values_list("text", flat=True))
    assert set(written) - stored == set(), "saved (302) but not in the database"
    assert all(web.pid() != old_pids[web.name] for web in herd.webs()), "every replica was restarted"
    assert replicas_in_rotation(herd) == {"web1", "web2", "web3"}


def test_scaling_to_five_and_back_to_three_fails_no_request(herd, shoppers):
    lb = herd.haproxy()
    try:
        with steady_load(herd, shoppers) as load:
            time.sleep(0.5)
            herd.scale(5)
            assert replicas_in_rotation(herd) == {"web1", "web2", "web3", "web4", "web5"}
            web5_line = f"server web5 127.0.0.1:{herd.profile.web_port(5)} check"
            assert web5_line in lb.config.read_text(), "the config on disk keeps web5"
            # The new replicas take their share of the requests.
            wait_until(
                lambda: {"web4", "web5"} <= {served_by(herd) for _ in range(10)},
                10,
                "requests served by web4 and web5",
            )
            web4, web5 = Web(herd.profile, 4), Web(herd.profile, 5)
            herd.scale(3)
            time.sleep(0.5)
        assert load.report.failures == [], f"{len(load.report.failures)} of {load.report.requests} requests failed"
        assert load.report.requests > 50
    finally:
        herd.scale(3)

    assert set(lb.server_states()) - {"BACKEND"} == {"web1", "web2", "web3"}
    assert replicas_in_rotation(herd) == {"web1", "web2", "web3"}
    assert "web4" not in lb.config.read_text()
    assert not web4.running() and not web5.running()
    assert not web4.pidfile.exists() and not web5.pidfile.exists()
    assert [web.name for web in herd.webs()] == ["web1", "web2", "web3"]
    assert (herd.profile.state / "replicas").read_text() == "3"


@pytest.fixture
def lone_replica(herd):
    """web9: a replica outside HAProxy, for this test alone."""
    web = Web(herd.profile, 9, herd.database)
    web.start()
    yield web
    web.stop()


def test_a_stopping_replica_closes_websockets_with_1012_service_restart(herd, lone_replica, wait_for_replicas):
    if importlib.util.find_spec("notifications.consumers") is None:
        pytest.skip("no /ws/notifications/ consumer yet (notifications/consumers.py)")
    make_user("socketeer")
    wait_for_replicas()
    visitor = Visitor(f"http://127.0.0.1:{lone_replica.port}")
    assert visitor.log_in("socketeer", PASSWORD).status_code == 302
    session = visitor.client.cookies[settings.SESSION_COOKIE_NAME]

    url = f"ws://127.0.0.1:{lone_replica.port}/ws/notifications/"
    try:
        socket = connect(
            url,
            origin=f"http://127.0.0.1:{lone_replica.port}",
            additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"},
            open_timeout=10,
        )
    except InvalidStatus as refused:
        pytest.fail(f"the logged-in socket was refused: {refused}")
    with socket:
        os.kill(lone_replica.pid(), signal.SIGTERM)
        drain_and_shutdown = settings.HERD_DRAIN_SECONDS + 20 + 5
        with pytest.raises(ConnectionClosed) as closed:
            deadline = time.monotonic() + drain_and_shutdown
            while time.monotonic() < deadline:
                with pytest.raises(TimeoutError):
                    socket.recv(timeout=0.5)  # nothing is sent on an idle socket
    assert closed.value.rcvd is not None, "the replica closed the TCP connection without a close frame"
    assert closed.value.rcvd.code == 1012  # "service restart": reconnect
    wait_until(lambda: not lone_replica.running(), 30, "web9 exits")
