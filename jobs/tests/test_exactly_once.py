"""Exactly once across the gap between a job's two commits: its effect (main database),
then its end and notification (the owner's shard).

A delivery is held in that gap by the fault injection point of ``jobs.tasks``
(``HERD_FAULT_HOLD_AFTER_EFFECT_SECONDS``) while a second delivery of the same message
runs to the end; pushes are counted on the owner's group through the real channel layer.
The same gap with a SIGKILLed worker: ``deploy/tests/test_live_jobs.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers
from django.db import connections
from django_redis import get_redis_connection

from catalog.models import Product
from jobs.models import Job
from jobs.services import start_job
from jobs.tasks import HELD, RELEASED, hold_after_effect_key, run_job
from jobs.tests.conftest import closing_connections, csv_bytes, finished_events
from notifications.models import Notification
from notifications.push import user_group
from scaling.db import consistency, positions

ROWS = [("Lamp", "lamp", "lamps", "1", "1", ""), ("Shade", "shade", "lamps", "2", "3", "")]


def deliver(job_id: int, errors: list[BaseException]) -> None:
    """One delivery of the job's message, as the worker runs it (in this thread)."""
    try:
        with consistency.at_least(positions.current()):
            run_job.fn(str(job_id))
    except Exception as error:
        errors.append(error)
    finally:
        connections.close_all()


async def pushes_to(user_id: int, while_running: Callable[[], None]) -> list[dict]:
    """Every event pushed to the user's group while ``while_running`` runs, and for 1 s after."""
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    channel = await layer.new_channel()
    await layer.group_add(user_group(user_id), channel)
    events = []
    try:
        await asyncio.to_thread(closing_connections, while_running)
        while True:
            try:
                events.append(await asyncio.wait_for(layer.receive(channel), timeout=1))
            except TimeoutError:
                return events
    finally:
        await layer.group_discard(user_group(user_id), channel)
        await layer.close_pools()


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_delivery_resuming_after_another_finished_the_job_changes_nothing_and_tells_no_one(staff, settings):
    settings.HERD_FAULT_HOLD_AFTER_EFFECT_SECONDS = 30
    job = start_job(staff, "catalog_import", input_bytes=csv_bytes(ROWS))
    redis = get_redis_connection("default")
    key = hold_after_effect_key(job.pk)
    first_errors: list[BaseException] = []
    second_errors: list[BaseException] = []

    def two_deliveries() -> None:
        first = threading.Thread(target=deliver, args=(job.pk, first_errors))
        first.start()
        deadline = time.monotonic() + 30
        while redis.get(key) != HELD:
            assert first.is_alive() and time.monotonic() < deadline, f"never held after the effect: {first_errors}"
            time.sleep(0.02)
        # In the gap: the effect is committed, the job has not ended.
        assert set(Product.objects.using("default").values_list("slug", flat=True)) == {"lamp", "shade"}
        assert Job.objects.for_id(job.pk).get().state == Job.State.RUNNING
        deliver(job.pk, second_errors)  # a redelivery runs to the end meanwhile
        assert Job.objects.for_id(job.pk).get().state == Job.State.SUCCEEDED
        redis.set(key, RELEASED)
        first.join(30)
        assert not first.is_alive()

    events = asyncio.run(pushes_to(staff.pk, two_deliveries))

    assert (first_errors, second_errors) == ([], [])  # the late finisher returns quietly, no error
    finished = Job.objects.for_id(job.pk).get()
    assert (finished.state, finished.attempts) == (Job.State.SUCCEEDED, 2)
    assert sorted(Product.objects.using("default").values_list("slug", "stock")) == [("lamp", 1), ("shade", 3)]
    assert Notification.objects.for_user(staff.pk).filter(job=finished).count() == 1
    assert len(finished_events(events)) == 1, events
    assert len([e for e in events if e["type"] == "notification"]) == 1, events
