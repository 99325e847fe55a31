"""Jobs end to end: a real browser through HAProxy, a real Dramatiq worker on RabbitMQ.

Uses the herd of deploy/tests/conftest.py (web1..web3 behind HAProxy) and starts a
Dramatiq worker (``manage.py rundramatiq``) of the test profile on the test database.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import signal
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
import websockets
from django.conf import settings
from django.core.management import call_command
from django_redis import get_redis_connection
from playwright.sync_api import sync_playwright

from accounts.tests.factories import PASSWORD, make_user
from catalog.models import Product
from deploy.herd.app import Worker
from deploy.herd.processes import pid_alive
from deploy.herd.profiles import PROFILES
from deploy.visitor import Visitor
from jobs import services as job_services
from jobs.models import Job
from jobs.tasks import HELD, hold_after_effect_key
from jobs.tests.conftest import closing_connections, csv_bytes, finished_events
from notifications.models import Notification
from scaling.web.storage import private_storage

pytestmark = [
    pytest.mark.herd,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("clear_login_throttles"),
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Every value the page's progress text takes, recorded in the page itself.
RECORD_PROGRESS = """
window.__progress = [];
document.addEventListener("DOMContentLoaded", function () {
  new MutationObserver(function () {
    document.querySelectorAll("[data-job-percent]").forEach(function (e) { window.__progress.push(e.textContent); });
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
});
"""


@pytest.fixture
def worker(herd):
    process = Worker(PROFILES["test"], database=settings.DATABASES["default"]["NAME"])
    process.ensure()
    yield process
    process.stop()


@pytest.fixture
def shopper(wait_for_replicas):
    user = make_user("shopper")
    wait_for_replicas()
    return user


def seed_products(count: int, wait_for_replicas) -> None:
    call_command(
        "seed_catalog",
        "--products",
        str(count),
        "--reviews-per-product",
        "0",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    # A bulk load is megabytes of WAL; on a busy 2-core machine the replica may take a while.
    wait_for_replicas(timeout=60)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_a_shopper_watches_an_export_progress_live_and_downloads_it(herd, worker, shopper, wait_for_replicas):
    seed_products(30_000, wait_for_replicas)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.add_init_script(RECORD_PROGRESS)
            page.goto(herd.profile.url + "accounts/login/")
            page.fill("#id_username", "shopper")
            page.fill("#id_password", PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url("**/accounts/profile/")
            page.goto(herd.profile.url + "jobs/")
            badge = page.locator("[data-unread-count]")
            assert badge.is_hidden()

            page.get_by_role("button", name="Export the catalog as CSV").click()
            page.wait_for_url("**/jobs/*/")
            navigations = []
            page.on("framenavigated", lambda frame: navigations.append(frame.url))

            download_link = page.locator("a[download]")
            download_link.wait_for(timeout=60_000)
            badge.wait_for(state="visible", timeout=10_000)
            assert badge.inner_text() == "1"
            assert page.locator("#live-notifications li").count() == 1
            assert navigations == [], "the page reloaded"
            seen = [int(text.rstrip("%")) for text in page.evaluate("window.__progress")]
            assert any(0 < value < 100 for value in seen), f"the bar never moved: {seen}"
            assert seen[: seen.index(100)] == sorted(seen[: seen.index(100)])

            with page.expect_download() as download:
                download_link.click()
            with open(download.value.path(), encoding="utf-8", newline="") as exported:
                rows = list(csv.reader(exported))
        finally:
            browser.close()
    assert rows[0][:2] == ["name", "slug"]
    assert len(rows) == 30_001


def test_a_socket_on_one_replica_hears_of_a_job_started_through_another_once(herd, worker, shopper):
    web1, web2, _ = herd.webs()
    visitor = Visitor(herd.profile.url)
    assert visitor.log_in("shopper", PASSWORD, port=web2.port).status_code == 302

    def start_and_wait() -> None:
        started = start_export(visitor, web2.port)
        assert started.headers["X-Served-By"] == "web2"
        wait_until(lambda: Job.objects.for_user(shopper.pk).get().is_finished, 60, "the export never ended")

    events = asyncio.run(socket_events(visitor, web1.port, start_and_wait))
    assert len(finished_events(events)) == 1, events
    assert len(notification_events(events)) == 1, events


QUIET_SECONDS = 2.0  # after a job's end: a second push of it would have arrived by then


async def socket_events(visitor: Visitor, port: int, while_running: Callable[[], None]) -> list[dict]:
    """Every event on the visitor's socket to ``port``, opened before ``while_running`` runs
    (in a thread) and read until ``QUIET_SECONDS`` after it returns."""
    events = []
    headers = {"Cookie": f"sessionid={visitor.client.cookies['sessionid']}", "Origin": f"http://127.0.0.1:{port}"}
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/notifications/", additional_headers=headers) as socket:

        async def read() -> None:
            async for message in socket:
                events.append(json.loads(message))

        reader = asyncio.create_task(read())
        try:
            await asyncio.to_thread(closing_connections, while_running)
            await asyncio.sleep(QUIET_SECONDS)
        finally:
            reader.cancel()
    return events


def notification_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("type") == "notification"]


def wait_until(condition: Callable[[], bool], seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def start_export(visitor: Visitor, port: int):
    """Submit the jobs page's export form (its CSRF token and idempotency key) to ``port``."""
    page = visitor.get("/jobs/", port)
    form = page.text.split('action="/jobs/start/catalog_export/"', 1)[1].split("</form>", 1)[0]
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form))
    return visitor.client.post(f"http://127.0.0.1:{port}/jobs/start/catalog_export/", data=fields)


def test_a_job_whose_worker_is_killed_is_redelivered_and_finishes_once(worker, shopper, wait_for_replicas):
    seed_products(150_000, wait_for_replicas)
    job = job_services.start_job(shopper, "catalog_export", idempotency_key="kill-test")
    deadline = time.monotonic() + 60
    while Job.objects.for_id(job.pk).get().progress < 5:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    pid = worker.pid()
    os.killpg(pid, signal.SIGKILL)
    wait_until_dead = time.monotonic() + 10
    while pid_alive(pid):
        assert time.monotonic() < wait_until_dead
        time.sleep(0.05)
    assert Job.objects.for_id(job.pk).get().state == Job.State.RUNNING

    worker.start()
    restarted = time.monotonic()
    while Job.objects.for_id(job.pk).get().state != Job.State.SUCCEEDED:
        assert time.monotonic() - restarted < 30, "not finished within 30 s of a worker being available again"
        time.sleep(0.2)
    job.refresh_from_db()
    assert job.attempts == 2
    assert job.result["products"] == 150_000
    assert Notification.objects.for_user(shopper.pk).filter(job=job).count() == 1
    assert private_storage().exists(job.output_name)


@pytest.fixture
def worker_held_after_the_effect(herd):
    """A worker whose first delivery of a job waits between the effect's commit and the end's
    (the fault injection point of ``jobs.tasks``), long enough to be SIGKILLed there."""
    env = {"HERD_FAULT_HOLD_AFTER_EFFECT_SECONDS": "120"}
    process = Worker(PROFILES["test"], database=settings.DATABASES["default"]["NAME"], extra_env=env)
    process.ensure()
    yield process
    process.stop()


def test_a_worker_killed_after_the_effect_committed_imports_once_and_tells_the_owner_once(
    herd, worker_held_after_the_effect, wait_for_replicas
):
    worker = worker_held_after_the_effect
    staff = make_user("staffer", is_staff=True)
    wait_for_replicas()
    visitor = Visitor(herd.profile.url)
    assert visitor.log_in("staffer", PASSWORD).status_code == 302
    rows = [(f"Lamp {n}", f"lamp-{n}", "lamps", f"{n}.50", str(n), "") for n in range(500)]
    redis = get_redis_connection("default")
    jobs = []

    def import_kill_and_restart() -> None:
        job = job_services.start_job(staff, "catalog_import", input_bytes=csv_bytes(rows))
        jobs.append(job)
        wait_until(lambda: redis.get(hold_after_effect_key(job.pk)) == HELD, 60, "the worker never reached the gap")
        assert Product.objects.using("default").count() == 500  # the effect committed
        pid = worker.pid()
        os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10, "the worker outlived SIGKILL")
        assert Job.objects.for_id(job.pk).get().state == Job.State.RUNNING  # ... and the end did not

        worker.start()
        finished_in_time = "not finished within 30 s of a worker being available again"
        wait_until(lambda: Job.objects.for_id(job.pk).get().is_finished, 30, finished_in_time)

    events = asyncio.run(socket_events(visitor, herd.haproxy().port, import_kill_and_restart))
    job = Job.objects.for_id(jobs[0].pk).get()
    assert (job.state, job.attempts) == (Job.State.SUCCEEDED, 2), job.error
    products = Product.objects.using("default").values_list("slug", "price", "stock")
    assert sorted(products) == sorted((slug, Decimal(price), int(stock)) for _, slug, _, price, stock, _ in rows)
    assert Notification.objects.for_user(staff.pk).filter(job=job).count() == 1
    assert len(finished_events(events)) == 1, events
    assert len(notification_events(events)) == 1, events
