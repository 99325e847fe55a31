"""A job reads at least what its enqueuer had committed, on the real primary and a lagging replica."""

import pytest
from dramatiq import Message

from accounts.models import User
from scaling.db import consistency, positions
from scaling.db.replicas import replica_health
from scaling.queue import OPTION, ReadAtLeastEnqueuerMiddleware

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_a_job_reads_the_primary_until_the_replica_has_what_its_enqueuer_wrote(wait_for_replicas, replica_delay):
    user = User.objects.create(username="enqueuer")
    wait_for_replicas()
    replica_health.check("replica1")
    replica_delay("3s")
    User.objects.filter(pk=user.pk).update(first_name="Written before the enqueue")

    middleware = ReadAtLeastEnqueuerMiddleware()
    message = Message(queue_name="default", actor_name="job", args=(user.pk,), kwargs={}, options={})
    middleware.before_enqueue(None, message, 0)
    assert message.options[OPTION] >= positions.current() - 1024

    middleware.before_process_message(None, message)
    try:
        assert consistency.read_alias() == "default"
        assert User.objects.get(pk=user.pk).first_name == "Written before the enqueue"
    finally:
        middleware.after_process_message(None, message)
    assert consistency.read_alias() == "replica1"


def test_a_retried_message_keeps_its_first_position():
    middleware = ReadAtLeastEnqueuerMiddleware()
    message = Message(queue_name="default", actor_name="job", args=(), kwargs={}, options={OPTION: 42})
    middleware.before_enqueue(None, message, 0)
    assert message.options[OPTION] == 42
