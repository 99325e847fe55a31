"""Restarting and resizing the herd while it serves: nothing fails, nothing is lost.

Uses the herd of deploy/tests/conftest.py (web1..web3 behind HAProxy) and leaves it at
three replicas. A steady load of logged-in visitors reads pages and writes reviews
through HAProxy while ``Herd.rolling_restart()`` and ``Herd.scale()`` run; every
answer must be a 2xx or 3xx, every saved review must be in the database, and every
profile page must still know its visitor. The WebSocket test starts a replica of its
own (web9) and stops it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from accounts import services as accounts_services
from catalog import services as catalog_services
from catalog.models import Review
from deploy.herd import Herd, Web, pid_alive
from deploy.tests.visitor import Visitor

pytestmark = [
    pytest.mark.herd,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("clear_login_throttles"),
]

PASSWORD = "a-long-test-password-42"
VISITORS = 3
PRODUCTS_PER_VISITOR = 120
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
USERNAME = re.compile(r'data-username="([^"]+)"')


def served_by(herd: Herd) -> str:
    """The replica that answers the home page (past HAProxy's edge cache)."""
    return httpx.get(herd.profile.url, headers={"Cache-Control": "no-cache"}).headers["X-Served-By"]


@dataclass
class LoadReport:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    saved_reviews: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Shopper(threading.Thread):
    """One logged-in visitor: reads four pages, then reviews a product it has not reviewed."""

    def __init__(self, base_url: str, username: str, slugs: list[str], report: LoadReport, stop: threading.Event):
        super().__init__(daemon=True)
        self.visitor = Visitor(base_url)
        self.username = username
        self.slugs = slugs
        self.report = report
        self.stop = stop
        self.run_id = f"{time.monotonic_ns()}"

    def request(self, method: str, path: str, **kwargs) -> httpx.Response | None:
        with self.report.lock:
            self.report.requests += 1
        try:
            response = self.visitor.client.request(method, self.visitor.url(path), **kwargs)
        except httpx.HTTPError as error:
            self.fail(f"{method} {path}: {type(error).__name__}: {error}")
            return None
        if not 200 <= response.status_code < 400:
            self.fail(f"{method} {path}: {response.status_code} from {response.headers.get('X-Served-By')}")
            return None
        return response

    def fail(self, what: str) -> None:
        with self.report.lock:
            self.report.failures.append(f"{self.username}: {what}")

    def check_logged_in(self) -> None:
        profile = self.request("GET", "/accounts/profile/")
        if profile is not None:
            match = USERNAME.search(profile.text) if profile.status_code == 200 else None
            if not match or match.group(1) != self.username:
                served_by = profile.headers.get("X-Served-By")
                self.fail(f"profile page ({profile.status_code} from {served_by}) does not know the visitor")

    def run(self) -> None:
        for number in range(10_000):  # bounded; the test sets `stop` long before
            if self.stop.is_set():
                return
            self.request("GET", "/")
            self.request("GET", "/products/")
            self.check_logged_in()
            if number < len(self.slugs):
                self.review(self.slugs[number], number)
            else:
                self.request("GET", f"/p/{self.slugs[0]}/")
            time.sleep(0.02)

    def review(self, slug: str, number: int) -> None:
        page = self.request("GET", f"/p/{slug}/")
        token = CSRF.search(page.text) if page is not None else None
        if page is not None and not token:
            self.fail(f"no review form on /p/{slug}/")
        if not token:
            return
        text = f"review {number} by {self.username} ({self.run_id})"
        data = {"csrfmiddlewaretoken": token.group(1), "rating": str(1 + number % 5), "text": text}
        saved = self.request("POST", f"/p/{slug}/review/", data=data)
        if saved is not None:
            if saved.status_code == 302:
                with self.report.lock:
                    self.report.saved_reviews.append(text)
            else:
                self.fail(f"review of {slug}: {saved.status_code} instead of 302")


class Load:
    """Shoppers running against HAProxy until ``stopped``."""

    def __init__(self, herd: Herd, shoppers: list[tuple[str, list[str]]]) -> None:
        self.report = LoadReport()
        self.stop = threading.Event()
        self.shoppers = [Shopper(herd.profile.url, name, slugs, self.report, self.stop) for name, slugs in shoppers]
        for shopper in self.shoppers:
            assert shopper.visitor.log_in(shopper.username, PASSWORD).status_code == 302

    def __enter__(self) -> Load:
        for shopper in self.shoppers:
            shopper.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for shopper in self.shoppers:
            shopper.join(timeout=30)
        assert not any(shopper.is_alive() for shopper in self.shoppers)

    def check_everyone_still_logged_in(self) -> None:
        for shopper in self.shoppers:
            shopper.check_logged_in()


@pytest.fixture
def shoppers(wait_for_replicas) -> list[tuple[str, list[str]]]:
    category = catalog_services.create_category(name="Rolling", slug="rolling")
    made = []
    for visitor in range(VISITORS):
        username = f"shopper{visitor}"
        accounts_services.create_user(username=username, email=f"{username}@example.com", password=PASSWORD)
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
    with Load(herd, shoppers) as load:
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


def test_scaling_to_five_and_back_to_three_fails_no_request(herd, shoppers):
    lb = herd.haproxy()
    try:
        with Load(herd, shoppers) as load:
            time.sleep(0.5)
            herd.scale(5)
            assert replicas_in_rotation(herd) == {"web1", "web2", "web3", "web4", "web5"}
            assert "server web5 127.0.0.1:8105 check" in lb.config.read_text(), "the config on disk keeps web5"
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
    accounts_services.create_user(username="socketeer", email="socketeer@example.com", password=PASSWORD)
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
