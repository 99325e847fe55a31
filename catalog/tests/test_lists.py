"""Product lists: keyset pages cover every product exactly once; filters, search and cursors."""

import base64
import io
import json
import re
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog import selectors
from catalog.models import Product

pytestmark = pytest.mark.django_db


@pytest.fixture
def shelf(make_category, make_product):
    """43 products in two categories; prices repeat, so ties must be broken by id."""
    lamps, chairs = make_category("Lamps"), make_category("Chairs")
    for number in range(43):
        make_product(
            f"{'Brass' if number % 3 else 'Oak'} thing {number}",
            price=f"{(number % 7) * 5}.50",
            stock=number % 4,
            in_category=lamps if number % 2 else chairs,
        )
    return lamps, chairs


def every_page(**filters) -> list[int]:
    ids, after, pages = [], None, 0
    while True:
        page = selectors.product_list(after=after, limit=5, **filters)
        ids += [card.id for card in page.products]
        pages += 1
        assert pages < 100
        if page.next_cursor is None:
            return ids
        after = page.next_cursor


@pytest.mark.parametrize("sort", ["newest", "price"])
@pytest.mark.parametrize(
    "filters",
    [{}, {"in_stock": True}, {"query": "brass"}, {"min_price": Decimal("10"), "max_price": Decimal("20.50")}],
    ids=["all", "in stock", "search", "price range"],
)
def test_keyset_pages_return_every_matching_product_exactly_once_in_order(shelf, sort, filters):
    lamps, _ = shelf
    for category in (None, lamps):
        slug = category.slug if category else None
        ids = every_page(sort=sort, category_slug=slug, **filters)
        expected = Product.objects.all()
        if slug:
            expected = expected.filter(category=category)
        if filters.get("in_stock"):
            expected = expected.filter(stock__gt=0)
        if "query" in filters:
            expected = expected.filter(name__icontains=filters["query"])
        if "min_price" in filters:
            expected = expected.filter(price__gte=filters["min_price"], price__lte=filters["max_price"])
        order = ["-id"] if sort == "newest" else ["price", "id"]
        assert ids == list(expected.order_by(*order).values_list("id", flat=True))
        assert len(ids) == len(set(ids)) > 5


@pytest.mark.parametrize("sort", ["newest", "price"])
def test_previous_links_walk_back_over_the_same_pages_counting_down(shelf, sort):
    forward, after = [], None
    while True:
        page = selectors.product_list(after=after, limit=5, sort=sort, in_stock=True)
        forward.append((page.number, [card.id for card in page.products]))
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert [number for number, _ in forward] == list(range(1, len(forward) + 1))

    backward = [forward[-1]]
    while page.has_previous:
        page = selectors.product_list(before=page.previous_cursor, limit=5, sort=sort, in_stock=True)
        backward.append((page.number, [card.id for card in page.products]))
        assert len(backward) <= len(forward)
    assert backward == forward[::-1]
    assert page.previous_cursor is None and forward[0][0] == 1


def test_the_second_page_leads_back_to_the_first_without_a_cursor(shelf):
    second = selectors.product_list(after=selectors.product_list(limit=5).next_cursor, limit=5)
    assert (second.number, second.has_previous, second.previous_cursor) == (2, True, None)
    assert not selectors.product_list(limit=5).has_previous


def test_a_link_with_both_cursors_is_refused(shelf):
    cursor = selectors.product_list(limit=5).next_cursor
    with pytest.raises(selectors.InvalidCursor):
        selectors.product_list(limit=5, after=cursor, before=cursor)


def test_the_last_page_has_no_next_cursor(shelf):
    page = selectors.product_list(limit=43)
    assert len(page.products) == 43
    assert page.next_cursor is None


def test_a_later_page_does_not_use_offset_or_count(shelf, django_assert_num_queries):
    cursor = selectors.product_list(limit=5).next_cursor
    with django_assert_num_queries(1) as captured:
        selectors.product_list(limit=5, after=cursor)
    sql = captured.captured_queries[0]["sql"].upper()
    assert "OFFSET" not in sql
    assert "COUNT(" not in sql


def forge(payload) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("cursor", "sort"),
    [
        ("not-a-cursor!", "newest"),
        ("eyJz", "newest"),
        (forge({"s": "newest", "k": ["1; DROP TABLE x"]}), "newest"),
        (forge({"s": "newest", "k": [2**70]}), "newest"),
        (forge({"s": "price", "k": ["NaN", 3]}), "price"),
        (forge({"s": "price", "k": ["1e40", 3]}), "price"),
        (forge({"s": "price", "k": [3]}), "price"),
        (forge({"s": "newest", "k": [3]}), "price"),
        (forge(["s", "k"]), "newest"),
    ],
)
def test_a_forged_cursor_raises_invalid_cursor(cursor, sort):
    with pytest.raises(selectors.InvalidCursor):
        selectors.product_list(sort=sort, after=cursor)


def test_search_finds_products_by_part_of_the_name_in_any_case(make_product):
    make_product("Brass Desk Lamp")
    make_product("Oak Chair")
    assert [card.name for card in selectors.product_list(query="ESK la").products] == ["Brass Desk Lamp"]


def test_search_can_use_the_trigram_index():
    call_command(
        "seed_catalog",
        products=3000,
        reviews_per_product=0,
        categories=3,
        reviewers=1,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    # The filter alone: on a few thousand rows the planner rightly prefers walking the
    # primary key for ORDER BY id LIMIT; on a large table the trigram index wins.
    sql, params = Product.objects.filter(name__icontains="walnut lam").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "catalog_product_name_trgm" in plan, plan
    found = [card.name for card in selectors.product_list(query="walnut lam").products]
    assert found
    assert all("Walnut Lam" in name for name in found)


def test_the_pages_say_how_many_there_are_about_from_statistics_never_by_counting(shelf, client):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE catalog_product")  # what autovacuum does on a real table
    with CaptureQueriesContext(connection) as captured:
        first = client.get("/products/").content.decode()
    assert "Page 1 of about 2<" in first  # 43 products, 24 a page: an estimate, said to be one
    assert not any("COUNT(" in query["sql"].upper() for query in captured.captured_queries)
    after = re.search(r'rel="next" href="\?after=([^"&]+)"', first).group(1)
    assert "Page 2 of 2<" in client.get(f"/products/?after={after}").content.decode()  # the last page knows
    # Under a filter the estimate would be a guess: only the page's own number.
    assert re.search(r"Page 1<", client.get("/products/?q=brass").content.decode())
