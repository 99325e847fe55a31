"""Reads of the catalog app.

Every selector returns plain values (model instances without lazy relations, frozen
dataclasses, tuples): safe to pickle into a cache, and costing a fixed number of
queries. The category index and list pages go through the query cache
(``scaling.cache.queries.cached_query``); the product page is cached whole by
``catalog.cache.product_page``. Where a query runs (primary or replica) is the
router's business, never a selector's.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from django.contrib.postgres.expressions import ArraySubquery
from django.core.cache import cache
from django.db import connections
from django.db.models import F, JSONField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import JSONObject

from catalog import images
from catalog.models import Category, ImageFile, Product, ProductImage, Review, rating_average
from scaling.cache.queries import cached_query

Sort = Literal["newest", "price"]
SORTS: tuple[Sort, ...] = ("newest", "price")
PRODUCT_PAGE_REVIEWS = 10
MAX_PRICE = Decimal(10**8)  # Product.price is numeric(10, 2)


class InvalidCursor(ValueError):
    """A page cursor that this code did not make (edited, truncated, or for another sort)."""


@dataclass(frozen=True)
class ProductCard:
    """A product as a list shows it."""

    id: int
    name: str
    slug: str
    price: Decimal
    stock: int
    category_name: str
    category_slug: str
    rating_count: int
    rating_average: float | None
    image: images.Picture | None = None  # the first picture; None: the card's placeholder


@dataclass(frozen=True)
class ProductPage:
    """One page of a product list; ``next_cursor`` is None on the last page.

    ``has_previous``: it is not the first page; ``previous_cursor`` is the ``before`` of
    the page before it (None when that is the first page: link to the list itself).
    ``number`` counts pages from 1 along the cursors, to show (None for a cursor made
    before pages were counted)."""

    products: tuple[ProductCard, ...]
    next_cursor: str | None
    number: int | None = 1
    has_previous: bool = False
    previous_cursor: str | None = None


@dataclass(frozen=True)
class ReviewData:
    rating: int
    text: str
    created_at: datetime.datetime
    author: str


@dataclass(frozen=True)
class ProductPageData:
    """Everything the product page shows, assembled in two queries."""

    id: int
    name: str
    slug: str
    description: str
    price: Decimal
    stock: int
    category_name: str
    category_slug: str
    rating_count: int
    rating_average: float | None
    reviews: tuple[ReviewData, ...]
    images: tuple[images.Picture, ...] = ()


def categories() -> list[Category]:
    """Every category, by name.

    Without product counts on purpose: counting a million products per category costs a
    scan of the whole index on every visit.
    """
    return cached_query(Category.objects.order_by("name", "id"))


def category(slug: str) -> Category:
    """The category with this slug; raises ``Category.DoesNotExist``."""
    return Category.objects.get(slug=slug)


# ------------------------------------------------------------------- keyset cursors


def encode_cursor(sort: Sort, key: list, number: int | None = None) -> str:
    """The cursor of the page after ``key``; ``number``: that page's number, to show."""
    data = {"s": sort, "k": key} if number is None else {"s": sort, "k": key, "n": number}
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_number(cursor: str) -> int | None:
    """The page number a cursor carries (shown only, never trusted for data), or None."""
    try:
        number = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))).get("n")
    except (ValueError, TypeError, AttributeError):
        return None
    return number if type(number) is int and 1 < number < 10**9 else None


def _decode_cursor(cursor: str, sort: Sort) -> tuple:
    """The sort key after which the next page starts: ``(id,)`` or ``(price, id)``."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        kind, key = data["s"], data["k"]
        *rest, last_id = key
        price = Decimal(rest[0]) if sort == "price" and len(rest) == 1 and isinstance(rest[0], str) else None
    except (ValueError, TypeError, KeyError, ArithmeticError) as error:  # binascii, JSON, Decimal errors included
        raise InvalidCursor("This page link is damaged. Start again from the first page.") from error
    if kind != sort:
        raise InvalidCursor("This page link belongs to another sort order. Start again from the first page.")
    # Bounded like the columns, so a forged key is refused here rather than by the database.
    if type(last_id) is not int or not 0 <= last_id < 2**63:
        raise InvalidCursor("This page link is damaged. Start again from the first page.")
    if sort == "newest" and not rest:
        return (last_id,)
    if price is not None and price.is_finite() and 0 <= price < MAX_PRICE:
        return (price, last_id)
    raise InvalidCursor("This page link is damaged. Start again from the first page.")


PAGE_SIZE = 24
ESTIMATE_SECONDS = 600


def estimated_products(category_id: int | None = None) -> int | None:
    """About how many products there are (in one category): the planner's estimate from
    PostgreSQL's statistics (``pg_class.reltuples``, the column's most common values), an
    EXPLAIN and never a COUNT, kept ``ESTIMATE_SECONDS`` in the cache. Approximate by
    nature: show it as such. None while the table was never analyzed (the planner then
    guesses from its size on disk)."""
    key = f"catalog:estimated-products:{category_id or 'all'}"
    found = cache.get(key)
    if found is None:
        products = Product.objects.order_by()
        if category_id is not None:
            products = products.filter(category_id=category_id)
        with connections[products.db].cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [Product._meta.db_table])
            analyzed = cursor.fetchone()[0] >= 0
        found = json.loads(products.values("id").explain(format="json"))[0]["Plan"]["Plan Rows"] if analyzed else 0
        cache.set(key, found, ESTIMATE_SECONDS)
    return found or None


def product_list(
    *,
    category_slug: str | None = None,
    query: str = "",
    min_price: Decimal | None = None,
    max_price: Decimal | None = None,
    in_stock: bool = False,
    sort: Sort = "newest",
    after: str | None = None,
    before: str | None = None,
    limit: int = PAGE_SIZE,
) -> ProductPage:
    """One page of products, with keyset pagination.

    ``newest`` orders by ``-id``, ``price`` by ``(price, id)``; each has an index, so
    page N costs what page 1 costs (no OFFSET, no COUNT). Pass a page's ``next_cursor``
    as ``after`` for the page after it, its ``previous_cursor`` as ``before`` for the one
    before (the index walked backwards); a cursor this code did not make raises
    ``InvalidCursor``. Every product matching the filters appears on exactly one page
    while the list is not edited.
    """
    if sort not in SORTS:
        raise ValueError(f"Unknown sort {sort!r}; expected one of {', '.join(SORTS)}.")
    if after is not None and before is not None:
        raise InvalidCursor("A page link names both the page after and before it. Start again from the first page.")
    products = Product.objects.all()
    if category_slug is not None:
        # A scalar subquery, not a join: the planner then knows it is one category_id and
        # walks the (category, ...) indexes instead of filtering the whole list.
        category_id = Category.objects.filter(slug=category_slug).order_by().values("id")[:1]
        products = products.filter(category_id=Subquery(category_id))
    if query:
        products = products.filter(name__icontains=query)
    if min_price is not None:
        products = products.filter(price__gte=min_price)
    if max_price is not None:
        products = products.filter(price__lte=max_price)
    if in_stock:
        products = products.filter(stock__gt=0)

    if sort == "newest":
        if after is not None:
            (last_id,) = _decode_cursor(after, sort)
            products = products.filter(id__lt=last_id)
        elif before is not None:
            (first_id,) = _decode_cursor(before, sort)
            products = products.filter(id__gt=first_id)
        products = products.order_by("id" if before is not None else "-id")
    else:
        if after is not None:
            last_price, last_id = _decode_cursor(after, sort)
            # The redundant price >= bound lets the (price, id) index start at the cursor;
            # the OR then only skips rows of that one price.
            products = products.filter(Q(price__gt=last_price) | Q(price=last_price, id__gt=last_id)).filter(
                price__gte=last_price
            )
        elif before is not None:
            first_price, first_id = _decode_cursor(before, sort)
            products = products.filter(Q(price__lt=first_price) | Q(price=first_price, id__lt=first_id)).filter(
                price__lte=first_price
            )
        products = products.order_by(*(("-price", "-id") if before is not None else ("price", "id")))

    rows = cached_query(
        products.values(
            "id",
            "name",
            "slug",
            "price",
            "stock",
            "rating_count",
            "rating_sum",
            category_name=F("category__name"),
            category_slug=F("category__slug"),
            first_image=Subquery(_pictures_in_order()[:1], output_field=JSONField()),
        )[: limit + 1],
        # The category filter and each card's first picture are subqueries: the cache cannot see them.
        extra_tables=[Category._meta.db_table, ProductImage._meta.db_table, ImageFile._meta.db_table],
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    if before is not None:
        rows = rows[::-1]  # read backwards from the cursor: put them in the list's order
    cards = tuple(
        ProductCard(
            id=row["id"],
            name=row["name"],
            slug=row["slug"],
            price=row["price"],
            stock=row["stock"],
            category_name=row["category_name"],
            category_slug=row["category_slug"],
            rating_count=row["rating_count"],
            rating_average=rating_average(row["rating_count"], row["rating_sum"]),
            image=_picture(row["first_image"]) if row["first_image"] else None,
        )
        for row in rows
    )

    def key(row: dict) -> list:
        return [row["id"]] if sort == "newest" else [str(row["price"]), row["id"]]

    if before is not None:
        # Backwards: the page after this one is the one the visitor came from, and there
        # is a page before it only if more rows were found.
        has_previous, has_next = has_more, bool(rows)
        number = _cursor_number(before) if has_previous else 1
    else:
        has_previous, has_next = after is not None, has_more
        number = 1 if after is None else _cursor_number(after)
    next_cursor = encode_cursor(sort, key(rows[-1]), number and number + 1) if has_next else None
    previous_cursor = None
    if has_previous and rows and number != 2:
        previous_cursor = encode_cursor(sort, key(rows[0]), number and number - 1)
    return ProductPage(
        products=cards,
        next_cursor=next_cursor,
        number=number,
        has_previous=has_previous,
        previous_cursor=previous_cursor,
    )


_PICTURE_FIELDS = ("alt", "image__original", "image__width", "image__height", "image__renditions")


def _picture(row: dict) -> images.Picture:
    return images.picture(
        alt=row["alt"],
        original=row["image__original"],
        width=row["image__width"],
        height=row["image__height"],
        renditions=row["image__renditions"],
    )


def _pictures_in_order() -> QuerySet:
    """Each picture of the outer query's product, in order, as one JSON object each."""
    return (
        ProductImage.objects.filter(product_id=OuterRef("id"))
        .order_by("position", "id")
        .values(data=JSONObject(**{field: field for field in _PICTURE_FIELDS}))
    )


def product_page(slug: str) -> ProductPageData:
    """The product page's data in two queries, however many reviews and pictures the product has.

    Raises ``Product.DoesNotExist`` for an unknown slug.
    """
    pictures = ArraySubquery(_pictures_in_order())
    product = Product.objects.select_related("category").annotate(pictures=pictures).get(slug=slug)
    reviews = (
        Review.objects.filter(product_id=product.pk)
        .order_by("-created_at", "-id")
        .values_list("rating", "text", "created_at", "user__username", "user__profile__display_name")[
            :PRODUCT_PAGE_REVIEWS
        ]
    )
    return ProductPageData(
        id=product.pk,
        name=product.name,
        slug=product.slug,
        description=product.description,
        price=product.price,
        stock=product.stock,
        category_name=product.category.name,
        category_slug=product.category.slug,
        rating_count=product.rating_count,
        rating_average=product.rating_average,
        reviews=tuple(
            ReviewData(rating=rating, text=text, created_at=created_at, author=display_name or username)
            for rating, text, created_at, username, display_name in reviews
        ),
        images=tuple(_picture(row) for row in product.pictures),
    )


def review_of(*, user_id: int, product_id: int) -> Review | None:
    """The user's own review of the product, if any (to pre-fill the form)."""
    return Review.objects.filter(user_id=user_id, product_id=product_id).first()
