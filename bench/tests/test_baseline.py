"""The competent baseline's settings (bench/baseline_settings.py, bench/baseline_urls.py):
anonymous catalog pages come from ``cache_page``, so a visitor may read a page older than a
review that was posted; a shopper with a session gets the view itself. This is what the
stale-read probe of bench/baseline.py counts."""

from decimal import Decimal

import pytest
from django.test import Client, override_settings

from accounts.tests.factories import logged_in_client
from bench import baseline_settings
from catalog import services

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def baseline():
    with override_settings(
        ROOT_URLCONF="bench.baseline_urls",
        MIDDLEWARE=baseline_settings.MIDDLEWARE,
        HERD_CACHES_ENABLED=False,
        SESSION_ENGINE=baseline_settings.SESSION_ENGINE,
        SESSION_CACHE_ALIAS=baseline_settings.SESSION_CACHE_ALIAS,
        BASELINE_CACHE_SECONDS=60,
    ):
        yield


def test_a_visitor_reads_the_cached_page_after_a_review_and_its_author_the_new_one(
    baseline, make_user, wait_for_replicas
):
    category = services.create_category(name="Lamps", slug="baseline-lamps")
    product = services.create_product(
        category=category, name="Baseline Lamp", slug="baseline-lamp", price=Decimal("12.00"), stock=2
    )
    author = logged_in_client(make_user("reviewer"))
    wait_for_replicas()
    assert "No reviews yet." in Client().get("/p/baseline-lamp/").text
    assert "No reviews yet." in author.get("/p/baseline-lamp/").text

    posted = author.post("/p/baseline-lamp/review/", {"rating": "4", "text": "Warm light, sturdy base"})
    assert posted.status_code == 302
    wait_for_replicas()

    assert "Warm light, sturdy base" in author.get("/p/baseline-lamp/").text
    stale = Client().get("/p/baseline-lamp/")
    assert stale.status_code == 200
    assert "Warm light, sturdy base" not in stale.text  # cache_page's copy, up to 60 s old
    assert product.slug in stale.text
