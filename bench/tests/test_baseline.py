"""The competent baseline's settings (bench/baseline_settings.py, bench/baseline_urls.py):
anonymous catalog pages come from ``cache_page``, so a visitor may read a page older than a
review that was posted; a shopper with a session gets the view itself. This is what the
stale-read probe of bench/baseline.py counts."""

from decimal import Decimal

import pytest
from django.test import Client, override_settings

from accounts.models import User
from accounts.tests.factories import logged_in_client
from bench import baseline_settings
from bench.baseline import form_fields
from catalog import services
from catalog.models import Product
from scaling.db.consistency import use_primary

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


def test_the_probes_price_change_posts_what_the_admin_form_needs_and_lands(make_user, wait_for_replicas):
    """bench/baseline.py's probe changes a price as a browser does: the change form's own
    fields (the pictures inline's management form among them) posted back, the price changed."""
    category = services.create_category(name="Desks", slug="probe-desks")
    product = services.create_product(
        category=category, name="Probe Desk", slug="probe-desk", price=Decimal("80.00"), stock=3
    )
    staff = make_user("probestaff", is_staff=True)
    User.objects.filter(pk=staff.pk).update(is_superuser=True)
    client = logged_in_client(staff)
    wait_for_replicas()
    change = f"/admin/catalog/product/{product.pk}/change/"

    form = form_fields(client.get(change).text, "product_form", price="1234.56", _save="Save")
    assert form["name"] == ["Probe Desk"] and any(name.endswith("-TOTAL_FORMS") for name in form)
    posted = client.post(change, form)

    assert posted.status_code == 302, posted.content.decode()[:2000]
    with use_primary():
        assert Product.objects.get(pk=product.pk).price == Decimal("1234.56")
