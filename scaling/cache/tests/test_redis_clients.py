"""Redis clients are made once per process, not once per request."""

import contextvars

from django_redis import get_redis_connection


def in_a_new_request_context(alias: str):
    # A replica runs each request in a fresh context, where Django builds new cache backends.
    return contextvars.Context().run(get_redis_connection, alias)


def test_every_request_context_shares_one_client_per_redis():
    assert in_a_new_request_context("default") is in_a_new_request_context("default")
    assert in_a_new_request_context("state") is in_a_new_request_context("state")
    assert in_a_new_request_context("default") is not in_a_new_request_context("state")
    assert in_a_new_request_context("default").ping()
