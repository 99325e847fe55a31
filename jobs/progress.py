"""A running job's progress: stored on its row and pushed to its owner's sockets.

Only a change of the whole percentage is stored and pushed, so a job that reports
after every row costs at most a hundred writes and pushes. Progress only moves
forward and stays below 100 until the job finishes.

Inside a transaction on the main database (the step that applies a job's effect), the
row is not written: the effect's progress is the last stretch before the final state.
The push goes out at once there: it describes work in flight, and a rollback is
followed by the job's failure, which is pushed too. The row lives in its owner's shard
database, written there under ``scaling.sharding.shards.writing``.
"""

from __future__ import annotations

from django.db import transaction

from jobs.models import Job
from notifications.push import push, push_on_commit
from scaling.db.replicas import PRIMARY
from scaling.sharding import shards


def progress_event(job_id: str, progress: int, state: str) -> dict:
    return {"type": "job.progress", "job": str(job_id), "progress": progress, "state": state}


class Progress:
    def __init__(self, job: Job) -> None:
        self.job_id = job.pk
        self.owner_id = job.owner_id
        self.percent = job.progress

    def __call__(self, percent: float) -> None:
        """Report that the job is ``percent`` done (0 to 100)."""
        whole = max(0, min(int(percent), 99))
        if whole <= self.percent:
            return
        self.percent = whole
        event = progress_event(self.job_id, whole, Job.State.RUNNING)
        if transaction.get_connection(PRIMARY).in_atomic_block:
            push(self.owner_id, event)
            return
        with shards.writing(shards.shard_of_id(self.job_id)) as alias:
            Job.objects.using(alias).filter(pk=self.job_id, state=Job.State.RUNNING).update(progress=whole)
            push_on_commit(self.owner_id, event, using=alias)

    def step(self, start: float, end: float):
        """A reporter of (done, total) for one step that spans ``start``..``end`` percent."""

        def report(done: int, total: int) -> None:
            self(start + (end - start) * (done / total if total else 1))

        return report
