"""Structured logs: one JSON line per request with its id and user, and the id carried
into the job the request started, through the Dramatiq middleware the worker runs."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import uuid

import pytest
from django.conf import settings
from dramatiq import get_broker
from dramatiq.middleware import Middleware

from accounts.tests.factories import logged_in_client, make_user
from jobs.models import Job
from jobs.tasks import run_job
from scaling.ops import logs
from scaling.queue import REQUEST_ID_OPTION


@pytest.fixture
def json_lines():
    """Lines written as JSON on the given loggers while the test runs, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    attached = []

    def capture(*names: str) -> list:
        for name in names:
            logger = logging.getLogger(name)
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            attached.append(logger)
        return lines

    class Lines(list):
        def read(self) -> list[dict]:
            return [json.loads(line) for line in stream.getvalue().splitlines()]

    lines = Lines()
    yield capture
    for logger in attached:
        logger.removeHandler(handler)


def shopper_client(username: str = "shopper") -> tuple:
    user = make_user(username)
    return user, logged_in_client(user)


@pytest.mark.django_db(databases="__all__")
def test_a_request_logs_one_json_line_with_the_request_id_it_was_given_and_its_user(json_lines):
    user, client = shopper_client()
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    lines = json_lines("herd.request")
    response = client.get("/ops/data.json", HTTP_X_REQUEST_ID="edge-4f2a-0001")
    assert response.status_code == 200
    assert response["X-Request-ID"] == "edge-4f2a-0001"

    [line] = lines.read()
    assert line["request_id"] == "edge-4f2a-0001"
    assert line["user_id"] == str(user.pk)
    assert line["replica"] == settings.HERD_REPLICA_ID
    assert (line["method"], line["path"], line["status"]) == ("GET", "/ops/data.json", 200)
    assert "default" in line["db"]  # the user, read inside the test's transaction: on the primary
    assert line["duration_ms"] > 0
    assert {"time", "cache_hits", "cache_misses", "logger", "level"} <= line.keys()


@pytest.mark.django_db(databases="__all__")
def test_an_anonymous_request_without_an_id_gets_a_new_one_and_no_user(client, json_lines):
    lines = json_lines("herd.request")
    response = client.get("/robots.txt")
    [line] = lines.read()
    assert line["request_id"] == response["X-Request-ID"]
    assert str(uuid.UUID(line["request_id"])) == line["request_id"]
    assert line["user_id"] is None


@pytest.mark.django_db(databases="__all__")
def test_a_password_reset_link_is_logged_by_its_route_not_its_token(client, json_lines):
    lines = json_lines("herd.request")
    client.get("/accounts/password/reset/MQ/secret-reset-token-123/")
    [line] = lines.read()
    assert "secret-reset-token-123" not in json.dumps(line)
    assert line["path"] == "/accounts/password/reset/<uidb64>/<token>/"


@pytest.mark.parametrize("sent", ["has space", "a" * 129, "line\nbreak", '{"json":1}', ""])
def test_a_malformed_request_id_is_replaced(client, sent):
    response = client.get("/robots.txt", HTTP_X_REQUEST_ID=sent)
    assert response["X-Request-ID"] != sent
    uuid.UUID(response["X-Request-ID"])


def test_health_checks_write_no_request_line(client, json_lines):
    lines = json_lines("herd.request")
    client.get("/healthz")
    assert lines.read() == []


def test_anything_logged_during_a_request_or_job_carries_its_id(json_lines):
    lines = json_lines("somewhere.else")
    token = logs.begin("job-7")
    try:
        logging.getLogger("somewhere.else").warning("inside")
    finally:
        logs.end(token)
    logging.getLogger("somewhere.else").warning("outside")
    inside, outside = lines.read()
    assert (inside["request_id"], inside["message"]) == ("job-7", "inside")
    assert outside["request_id"] is None


class SentMessages(Middleware):
    def __init__(self) -> None:
        self.messages = []

    def after_enqueue(self, broker, message, delay) -> None:
        self.messages.append(message)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_job_started_by_a_request_logs_with_that_request_id_in_the_worker(json_lines, wait_for_replicas):
    broker = get_broker()
    sent = SentMessages()
    broker.add_middleware(sent)
    try:
        user, client = shopper_client("exporter")
        wait_for_replicas()  # the log-in reads the user from the replica
        response = client.post(
            "/jobs/start/catalog_export/", {"idempotency_key": uuid.uuid4().hex}, HTTP_X_REQUEST_ID="edge-job-42"
        )
        assert response.status_code == 302
    finally:
        broker.middleware.remove(sent)
    [message] = [m for m in sent.messages if m.actor_name == run_job.actor_name]
    assert message.options[REQUEST_ID_OPTION] == "edge-job-42"

    # What a worker thread does with a message: every middleware of the configured broker
    # before, the actor, every middleware after (dramatiq.worker._WorkerThread).
    lines = json_lines("herd.job")
    broker.emit_before("process_message", message)
    result = exception = None
    try:
        result = run_job(*message.args, **message.kwargs)
    except Exception as error:  # reported to the middleware, as the worker does
        exception = error
    broker.emit_after("process_message", message, result=result, exception=exception)

    [line] = lines.read()
    assert line["request_id"] == "edge-job-42"
    assert (line["actor"], line["message_id"], line["outcome"]) == ("run_job", message.message_id, "done")
    assert "default" in line["db"]
    assert Job.objects.for_user(user.pk).get().state == Job.State.SUCCEEDED


def test_a_message_no_request_sent_runs_under_its_own_message_id(json_lines):
    broker = get_broker()
    lines = json_lines("herd.job")
    message = run_job.message("not-a-job")
    broker.emit_before("process_message", message)
    broker.emit_after("process_message", message, result=None)
    [line] = lines.read()
    assert REQUEST_ID_OPTION not in message.options
    assert line["request_id"] == message.message_id


@pytest.mark.django_db(databases="__all__")
def test_a_path_with_a_newline_cannot_forge_a_line_in_the_text_log(client):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    text_format = {**settings.LOGGING["formatters"]["text"], "format": "%(levelname)s %(name)s %(message)s"}
    handler.setFormatter(logging.config.DictConfigurator({}).configure_formatter(text_format))
    logger = logging.getLogger("herd.request")
    logger.addHandler(handler)
    try:
        client.get("/nothing%0aINFO herd.request GET /admin/ 200%0d%1b[2K")
    finally:
        logger.removeHandler(handler)
    [line] = stream.getvalue().splitlines()
    assert line.startswith("INFO herd.request GET /nothing\\x0aINFO herd.request GET /admin/ 200\\x0d\\x1b[2K 404")
