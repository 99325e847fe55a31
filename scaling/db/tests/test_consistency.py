"""Read-your-writes on the real primary and a replica delayed by recovery_min_apply_delay."""

import time

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.cache import SessionStore
from django.db import OperationalError, connections
from django.http import HttpResponse
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from scaling.db import consistency, positions
from scaling.db.consistency import ReadYourWritesMiddleware
from scaling.db.replicas import replica_health

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def request_as(user: User | None):
    request = RequestFactory().get("/")
    request.session = SessionStore()
    if user is not None:
        request.session[SESSION_KEY] = str(user.pk)
        request.session.save()
        request.COOKIES[settings.SESSION_COOKIE_NAME] = request.session.session_key
    return request


def run(user: User | None, view):
    """Run ``view()`` as one request of ``user``; returns what it returned and the alias it read from."""
    seen = {}

    def get_response(request):
        seen["result"] = view()
        seen["alias"] = consistency.read_alias()
        return HttpResponse()

    ReadYourWritesMiddleware(get_response)(request_as(user))
    return seen["result"], seen["alias"]


def rename(user: User, name: str):
    def view():
        User.objects.filter(pk=user.pk).update(first_name=name)

    return view


def first_name_of(user: User):
    return lambda: User.objects.get(pk=user.pk).first_name


@pytest.fixture
def writer_and_reader(wait_for_replicas):
    writer = User.objects.create(username="writer")
    reader = User.objects.create(username="reader")
    wait_for_replicas()
    replica_health.check("replica1")
    return writer, reader


def test_a_writer_reads_their_own_write_while_another_user_reads_the_lagging_replica(writer_and_reader, replica_delay):
    writer, reader = writer_and_reader
    replica_delay("3s")
    run(writer, rename(writer, "Ada"))

    name, alias = run(writer, first_name_of(writer))
    assert (name, alias) == ("Ada", "default")

    name, alias = run(reader, first_name_of(writer))
    assert (name, alias) == ("", "replica1")


def test_once_the_replica_catches_up_the_writer_reads_from_it_again(writer_and_reader, replica_delay):
    writer, _ = writer_and_reader
    replica_delay("1s")
    run(writer, rename(writer, "Grace"))
    assert run(writer, first_name_of(writer)) == ("Grace", "default")
    deadline = time.monotonic() + 10
    while run(writer, first_name_of(writer))[1] != "replica1":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert run(writer, first_name_of(writer)) == ("Grace", "replica1")


def test_within_a_request_every_read_after_a_write_uses_the_primary(writer_and_reader, replica_delay):
    writer, _ = writer_and_reader
    replica_delay("3s")

    def write_then_read():
        before = consistency.read_alias()
        User.objects.filter(pk=writer.pk).update(first_name="Lin")
        return before, User.objects.get(pk=writer.pk).first_name

    (before, name), after = run(writer, write_then_read)
    assert (before, name, after) == ("replica1", "Lin", "default")


def test_use_primary_forces_the_primary(writer_and_reader):
    writer, _ = writer_and_reader

    def view():
        with consistency.use_primary():
            return consistency.read_alias()

    assert run(writer, view) == ("default", "replica1")


def test_a_job_carrying_its_requests_lsn_reads_at_least_that_position(writer_and_reader, replica_delay):
    writer, _ = writer_and_reader
    replica_delay("3s")
    User.objects.filter(pk=writer.pk).update(first_name="Job")
    lsn = positions.current()
    with consistency.at_least(lsn):
        assert consistency.read_alias() == "default"
        assert User.objects.get(pk=writer.pk).first_name == "Job"
    assert consistency.read_alias() == "replica1"


def test_background_work_waits_briefly_for_the_replica_instead_of_reading_the_primary(writer_and_reader, replica_delay):
    writer, _ = writer_and_reader
    replica_delay("500ms")
    User.objects.filter(pk=writer.pk).update(first_name="Rebuilt")
    with consistency.at_least(positions.current()):
        assert consistency.read_alias() == "default"
        assert consistency.wait_for_replica(timeout=0.05) is False
        started = time.monotonic()
        assert consistency.wait_for_replica(timeout=10) is True
        assert time.monotonic() - started < 5
        assert consistency.read_alias() == "replica1"
        assert User.objects.get(pk=writer.pk).first_name == "Rebuilt"


def test_the_stored_position_is_only_ever_raised(writer_and_reader):
    writer, _ = writer_and_reader
    consistency.remember_lsn(str(writer.pk), 5000)
    consistency.remember_lsn(str(writer.pk), 100)
    assert consistency.stored_lsn(str(writer.pk)) == 5000


def test_a_replica_that_fails_mid_request_is_taken_out_and_the_get_is_retried_on_the_primary(writer_and_reader):
    writer, _ = writer_and_reader
    calls = []

    def view(request):
        calls.append(consistency.read_alias())
        if len(calls) == 1:
            # The replica dies under the first attempt.
            connections["replica1"].ensure_connection()
            connections["replica1"].close()
            raise OperationalError("server closed the connection unexpectedly")
        return HttpResponse(User.objects.get(pk=writer.pk).username)

    request = request_as(writer)
    request.resolver_match = type("Match", (), {"func": staticmethod(view), "args": (), "kwargs": {}})()
    middleware = ReadYourWritesMiddleware(lambda r: HttpResponse())
    token = consistency._state.set(consistency.ReadState())
    try:
        assert consistency.read_alias() == "replica1"
        try:
            view(request)
        except OperationalError as error:
            response = middleware.process_exception(request, error)
    finally:
        consistency._state.reset(token)
    assert response.content == b"writer"
    assert calls == ["replica1", "default"]
    assert "replica1" not in replica_health.healthy_aliases()
    replica_health.check("replica1")


def test_a_position_the_last_health_check_saw_replayed_needs_no_question_to_the_replica(wait_for_replicas):
    User.objects.create(username="older")
    old = positions.current()
    wait_for_replicas()
    replica_health.check("replica1")  # it has replayed ``old`` by now
    newer = positions.current() + 10**9  # a position no replica has reached
    with CaptureQueriesContext(connections["replica1"]) as asked:
        assert consistency.has_replayed("replica1", old)
        assert not consistency.has_replayed("replica1", newer)
    assert [q["sql"] for q in asked.captured_queries] == [
        "SELECT COALESCE(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint, 0)"
    ]  # only the position the check had not seen was asked about
