"""A job's end reaches its owner's sockets before its notification: the notification's
push reads the unread count first, and the end is what a watching page waits for."""

from __future__ import annotations

import asyncio

import pytest

from jobs.services import start_job
from jobs.tests.conftest import csv_bytes
from jobs.tests.test_exactly_once import ROWS, deliver, pushes_to


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_finished_job_pushes_its_end_before_its_notification(staff):
    job = start_job(staff, "catalog_import", input_bytes=csv_bytes(ROWS))
    errors: list[BaseException] = []
    events = asyncio.run(pushes_to(staff.pk, lambda: deliver(job.pk, errors)))
    assert errors == []
    ends = [
        (event["type"], event.get("state"))
        for event in events
        if event["type"] == "notification" or event.get("state") == "succeeded"
    ]
    assert ends == [("job.progress", "succeeded"), ("notification", None)]
