"""A state Redis that is down: a clear 503 page, never a silent logout or a traceback."""

import pytest
from django.contrib.sessions.backends.cache import SessionStore as DjangoCacheSessionStore
from django.test import Client
from django_redis.client import DefaultClient
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import ConnectionError as RedisConnectionError

from accounts.tests.factories import PASSWORD, make_user
from scaling.web.sessions import SessionStore

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def session_store_down(monkeypatch):
    """Every Redis read fails as django-redis reports a refused connection (the cache
    Redis ignores it, as configured; the state Redis does not)."""

    def refuse(*args, **kwargs):
        error = RedisConnectionError("Error 111 connecting to 127.0.0.1:56379. Connection refused.")
        raise ConnectionInterrupted(connection=None) from error

    monkeypatch.setattr(DefaultClient, "get", refuse)


def test_a_session_that_cannot_be_read_is_an_error_not_an_empty_session(session_store_down):
    with pytest.raises(RedisConnectionError):
        SessionStore("k" * 32).load()


def test_a_session_key_the_cache_rejects_is_still_an_empty_session(monkeypatch):
    def invalid_key(*args, **kwargs):
        raise ValueError("invalid key")

    monkeypatch.setattr(DefaultClient, "get", invalid_key)
    store = SessionStore("k" * 32)
    assert store.load() == {}
    assert store.session_key is None


def test_a_logged_in_page_with_the_session_store_down_is_a_clean_503(session_store_down):
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "k" * 32
    response = client.get("/accounts/profile/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Cache-Control"] == "no-store"
    assert response["X-Served-By"]
    body = response.content.decode()
    assert "Herd is temporarily unavailable" in body
    assert "Traceback" not in body and "RedisConnectionError" not in body and "Connection refused" not in body


def test_an_anonymous_catalog_page_does_not_need_the_session_store(session_store_down):
    assert Client(raise_request_exception=False).get("/").status_code == 200


def test_other_errors_still_get_the_plain_500_page(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("catalog.views.selectors.categories", broken)
    response = Client(raise_request_exception=False).get("/", HTTP_CACHE_CONTROL="no-cache")
    assert response.status_code == 500
    assert "temporarily unavailable" not in response.content.decode()


def test_the_session_engine_is_this_one(settings):
    assert settings.SESSION_ENGINE == "scaling.web.sessions"
    assert issubclass(SessionStore, DjangoCacheSessionStore)


def test_a_session_written_is_read_back(wait_for_replicas):
    make_user("sam")
    client = Client()
    assert client.post("/accounts/login/", {"username": "sam", "password": PASSWORD}).status_code == 302
    assert client.get("/accounts/profile/").status_code == 200
