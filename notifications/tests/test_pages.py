"""The notifications page, the unread count in every page's header, and marking as read."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.tests.factories import logged_in_client
from catalog import services as catalog_services
from notifications import services
from notifications.models import Notification
from scaling.sharding import shards

pytestmark = pytest.mark.django_db


def queries_by_database(run) -> tuple:
    """What ``run()`` returned, and the SQL each database ran during it."""
    captures = {alias: CaptureQueriesContext(connections[alias]) for alias in ["default", *shards.shard_aliases()]}
    for capture in captures.values():
        capture.__enter__()
    try:
        result = run()
    finally:
        for capture in captures.values():
            capture.__exit__(None, None, None)
    ran = {alias: [query["sql"] for query in capture.captured_queries] for alias, capture in captures.items()}
    return result, {alias: sqls for alias, sqls in ran.items() if sqls}


def notification_queries(by_database: dict[str, list[str]]) -> list[str]:
    return [sql for queries in by_database.values() for sql in queries if "notifications_notification" in sql]


def test_the_page_lists_the_users_own_notifications_newest_first(alice, bob):
    services.notify(alice.pk, title="Export finished", body="12 products exported.", link="/jobs/")
    services.notify(alice.pk, title="Import failed", body="The file is empty.")
    services.notify(bob.pk, title="Bob's secret")
    response = logged_in_client(alice).get("/notifications/")
    page = response.content.decode()
    assert page.index("Import failed") < page.index("Export finished")
    assert '<a href="/jobs/">Export finished</a>' in page
    assert "Bob&#x27;s secret" not in page and "Bob's secret" not in page
    assert "private" in response["Cache-Control"] and "no-store" in response["Cache-Control"]


def test_the_header_shows_the_unread_count_with_one_count_query(alice):
    for number in range(3):
        services.notify(alice.pk, title=f"Note {number}")
    client = logged_in_client(alice)
    response, by_database = queries_by_database(lambda: client.get("/"))
    queries = notification_queries(by_database)
    assert len(queries) == 1 and "COUNT(*)" in queries[0]
    assert queries[0] in by_database[shards.alias_of_user(alice.pk)]
    assert '<span class="badge" data-unread-count>3</span>' in response.content.decode()


def test_the_page_queries_exactly_one_shard_and_joins_products_in_one_query(alice):
    lamps = catalog_services.create_category(name="Lamps", slug="lamps")
    products = [
        catalog_services.create_product(category=lamps, name=f"Lamp {n}", slug=f"lamp-{n}", price=1, stock=1)
        for n in range(5)
    ]
    for product in products:
        services.notify(alice.pk, title=f"{product.name} is back", product_id=product.pk)
    client = logged_in_client(alice)
    response, by_database = queries_by_database(lambda: client.get("/notifications/"))
    page = response.content.decode()
    assert all(f'<a class="product" href="/p/lamp-{n}/">Lamp {n}</a>' in page for n in range(5))
    shards_queried = [alias for alias in by_database if alias in shards.shard_aliases()]
    assert shards_queried == [shards.alias_of_user(alice.pk)]
    product_queries = [sql for sql in by_database["default"] if "catalog_product" in sql]
    assert len(product_queries) == 1, product_queries  # one batched query, not one per notification


def test_an_anonymous_visitor_gets_no_count_and_no_query():
    response, by_database = queries_by_database(lambda: Client().get("/"))
    assert notification_queries(by_database) == []
    assert "data-unread-count" not in response.content.decode()
    assert "live.js" not in response.content.decode()


def test_marking_one_read_lowers_the_count_and_all_read_clears_it(alice):
    first = services.notify(alice.pk, title="First")
    services.notify(alice.pk, title="Second")
    client = logged_in_client(alice)
    assert client.post(f"/notifications/{first.pk}/read/").status_code == 302
    assert "data-unread-count>1<" in client.get("/notifications/").content.decode()
    assert client.post("/notifications/read/").status_code == 302
    page = client.get("/notifications/").content.decode()
    assert "data-unread-count hidden>0<" in page
    assert not Notification.objects.for_user(alice.pk).filter(read_at__isnull=True).exists()


def test_nobody_can_mark_another_users_notification(alice, bob):
    note = services.notify(alice.pk, title="Alice's")
    assert logged_in_client(bob).post(f"/notifications/{note.pk}/read/").status_code == 404
    logged_in_client(bob).post("/notifications/read/")
    note.refresh_from_db()
    assert note.read_at is None


@pytest.mark.parametrize("path", ["/notifications/read/", "/notifications/{id}/read/"])
def test_marking_read_refuses_a_post_without_the_csrf_token(alice, path):
    note = services.notify(alice.pk, title="Keep me unread")
    client = logged_in_client(alice, enforce_csrf_checks=True)
    assert client.post(path.format(id=note.pk)).status_code == 403
    note.refresh_from_db()
    assert note.read_at is None


def test_marking_read_needs_a_post(alice):
    note = services.notify(alice.pk, title="Unread")
    assert logged_in_client(alice).get(f"/notifications/{note.pk}/read/").status_code == 405


def test_a_notification_links_only_to_a_path_on_this_site(alice):
    for link in ("https://evil.example/", "//evil.example/", "javascript:alert(1)"):
        with pytest.raises(ValueError):
            services.notify(alice.pk, title="Bad link", link=link)


def test_the_header_loads_the_live_script_by_its_hashed_name(alice, settings, tmp_path):
    # Production's storage, whatever tests otherwise use: hashed names from collectstatic's manifest.
    manifest = {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}
    settings.STORAGES = {**settings.STORAGES, "staticfiles": manifest}
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", "--noinput", verbosity=0)
    page = logged_in_client(alice).get("/").content.decode()
    assert '<script src="/static/notifications/live.' in page
    assert '<script src="/static/notifications/live.js"' not in page  # the hashed, immutable name
