"""A logged-in shopper's pages on the real primary, replica and Redis: what a warm page may
cost (queries, Redis calls, templates rendered), and the promises kept while it costs
that little: read-your-writes, no personal data in the shared fragments, CSRF on every
form, a session not written when unchanged."""

from __future__ import annotations

import contextlib
import re

import pytest
import redis.client
from django.db import connections
from django.test.utils import CaptureQueriesContext

from accounts.tests.factories import logged_in_client
from catalog import services
from scaling.cache.versions import cache_backend
from scaling.db.replicas import replica_health

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

PRODUCT_BODY = "catalog/includes/product_body.html"
LIST_BODY = "catalog/includes/product_list_body.html"
REVIEW_FIELDS = "catalog/includes/review_fields.html"
WRITES = {"SET", "SETEX", "PSETEX", "DEL", "EXPIRE", "WAIT", "EVAL", "EVALSHA"}


class Cost:
    """The data queries on every alias (the router's WAL-position checks and the shard
    map's check every ``HERD_SHARD_MAP_SECONDS`` left out) and the Redis commands (a
    pipeline's each) of the block."""

    def __init__(self, monkeypatch):
        self.commands: list[str] = []
        execute, pipeline_execute = redis.client.Redis.execute_command, redis.client.Pipeline.execute

        def counted(client, *args, **options):
            self.commands.append(str(args[0]).upper())
            return execute(client, *args, **options)

        def counted_pipeline(pipeline, *args, **options):
            self.commands += [str(command[0][0]).upper() for command in pipeline.command_stack]
            return pipeline_execute(pipeline, *args, **options)

        monkeypatch.setattr(redis.client.Redis, "execute_command", counted)
        monkeypatch.setattr(redis.client.Pipeline, "execute", counted_pipeline)

    def __enter__(self):
        self.commands.clear()
        self.stack = contextlib.ExitStack()
        self.contexts = [self.stack.enter_context(CaptureQueriesContext(connections[a])) for a in connections]
        return self

    def __exit__(self, *exc):
        self.stack.close()

    @property
    def queries(self) -> list[str]:
        sql = [query["sql"] for context in self.contexts for query in context.captured_queries]
        return [statement for statement in sql if "pg_" not in statement and "scaling_shardplacement" not in statement]


@pytest.fixture
def cost(monkeypatch):
    return Cost(monkeypatch)


@pytest.fixture
def shop(make_product, make_user, wait_for_replicas):
    products = [make_product(f"Lamp {n}") for n in range(3)]
    shopper = make_user("shopper", display_name="Sam Shopper")
    wait_for_replicas()
    replica_health.check("replica1")
    return products, shopper


def names(response) -> set[str]:
    return {template.name for template in response.templates}


def test_a_warm_logged_in_product_page_costs_three_queries_five_redis_calls_and_renders_no_shared_part(shop, cost):
    products, shopper = shop
    client = logged_in_client(shopper)
    page = f"/p/{products[0].slug}/"
    assert client.get(page).status_code == 200  # warms the page's data and fragments
    with cost:
        response = client.get(page)
    assert response.status_code == 200
    # The user with their profile, their own review (none), their unread count.
    assert len(cost.queries) <= 3, cost.queries
    # The page's data, the session, the user's position, both fragments at once, the shard's position.
    assert len(cost.commands) <= 5, cost.commands
    assert not WRITES & set(cost.commands), "an unchanged session (or anything else) was written"
    # The shared parts came from the cache: only the shopper's own bits were rendered.
    assert PRODUCT_BODY not in names(response) and REVIEW_FIELDS not in names(response)
    html = response.content.decode()
    assert "Sam Shopper" in html and "Lamp 0" in html and 'name="text"' in html


def test_a_warm_logged_in_product_list_costs_two_queries_and_renders_no_card(shop, cost):
    _, shopper = shop
    client = logged_in_client(shopper)
    assert client.get("/products/?q=Lamp").status_code == 200
    with cost:
        response = client.get("/products/?q=Lamp")
    assert response.status_code == 200
    assert len(cost.queries) <= 2, cost.queries
    assert len(cost.commands) <= 5, cost.commands
    assert not WRITES & set(cost.commands)
    assert LIST_BODY not in names(response)
    assert response.content.decode().count('class="card"') == 3


def test_a_shopper_sees_their_new_review_at_once_on_a_warm_page_while_the_replica_lags(shop, replica_delay):
    products, shopper = shop
    client = logged_in_client(shopper)
    page = f"/p/{products[1].slug}/"
    assert "No reviews yet." in client.get(page).content.decode()  # the fragments are warm
    replica_delay("3s")
    posted = client.post(f"{page}review/", {"rating": 4, "text": "Warm light, sturdy base."})
    assert posted.status_code == 302
    html = client.get(page).content.decode()
    assert "Warm light, sturdy base." in html and "Change your review" in html
    assert "No reviews yet." not in html
    # And on the list: its rating shows at once too.
    listing = client.get("/products/?q=Lamp+1").content.decode()
    assert "by 1 reviewer" in listing


def textarea(html: str) -> str:
    return re.search(r"<textarea[^>]*>(.*?)</textarea>", html, re.S).group(1).strip()


def test_no_shoppers_own_data_reaches_another_or_a_shared_fragment(shop, make_user, alice, wait_for_replicas):
    products, _ = shop
    page = f"/p/{products[2].slug}/"
    services.post_review(user=alice, product=products[2], rating=2, text="Alice's own words.")
    other = make_user("otto", display_name="Otto Other")
    wait_for_replicas()
    alice_client = logged_in_client(alice)
    alice_page = alice_client.get(page).content.decode()
    assert textarea(alice_page) == "Alice&#x27;s own words."  # her form, filled with her review
    assert "Alice A." in alice_page
    other_page = logged_in_client(other).get(page).content.decode()
    # Alice's review shows in the list of reviews, as for everyone; her form and name do not.
    assert textarea(other_page) == ""
    assert "Otto Other" in other_page and 'aria-current="page">Lamp 2' in other_page
    assert other_page.count("Alice A.") == 1  # as the review's author, not in the header
    redis_cache = cache_backend().client.get_client()
    for key in redis_cache.keys("*:f:*"):
        fragment = cache_backend().client.decode(redis_cache.get(key))
        assert "Otto" not in fragment and "Sam Shopper" not in fragment and "/accounts/logout/" not in fragment
        assert "csrfmiddlewaretoken" not in fragment and "Alice&#x27;s own words.</textarea>" not in fragment


def test_every_form_of_a_logged_in_page_carries_its_csrf_token(shop):
    products, shopper = shop
    client = logged_in_client(shopper, enforce_csrf_checks=True)
    page = f"/p/{products[0].slug}/"
    client.get(page)
    html = client.get(page).content.decode()
    forms = re.findall(r'<form method="post".*?</form>', html, re.S)
    assert len(forms) == 2  # log out, write a review
    assert all("csrfmiddlewaretoken" in form for form in forms)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert client.post(f"{page}review/", {"rating": 5, "text": ""}).status_code == 403
    assert client.post(f"{page}review/", {"rating": 5, "text": "", "csrfmiddlewaretoken": token}).status_code == 302
