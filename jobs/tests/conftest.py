"""Jobs fixtures: users made through the services, CSV files, and running a job as the worker would."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable

from django.db import connections

from jobs.models import Job
from jobs.tasks import run_job
from scaling.db import consistency, positions
from scaling.sharding import shards


def csv_bytes(rows: Iterable[Iterable[object]], header: Iterable[str] | None = None) -> bytes:
    """A CSV file as a spreadsheet saves it (UTF-8)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header or ("name", "slug", "category", "price", "stock", "description"))
    writer.writerows(rows)
    return buffer.getvalue().encode()


def all_jobs() -> list[Job]:
    """Every job on every shard (an explicit fan-out, as only tests and staff views do)."""
    return [job for jobs in shards.fan_out(lambda alias: list(Job.objects.using(alias).all())).values() for job in jobs]


def run(job) -> None:
    """Run the job's actor function here, reading at least what is committed now.

    The worker does the same through ``scaling.queue.ReadAtLeastEnqueuerMiddleware``;
    ``run_job.fn`` skips the middleware, so the floor is set here.
    """
    with consistency.at_least(positions.current()):
        run_job.fn(str(job.pk))
    # The test then reads outside any request, where reads may go to the replica: let
    # it replay what the job wrote first, as a user's next request would (read-your-writes).
    # (Inside a test's transaction every read goes to the primary: nothing to wait for.)
    if connections["default"].in_atomic_block:
        return
    positions.wait_until_replayed()


def closing_connections(work: Callable[[], None]) -> None:
    """Run ``work`` (in a thread of a test), then close that thread's database connections,
    which would otherwise keep the test databases from being dropped."""
    try:
        work()
    finally:
        connections.close_all()


def finished_events(events: list[dict]) -> list[dict]:
    """The pushed events that say a job succeeded."""
    return [e for e in events if e.get("type") == "job.progress" and e.get("state") == Job.State.SUCCEEDED]
