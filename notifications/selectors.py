"""Reads of the notifications app: on the user's shard database, joined by the application.

A notification may name a catalog product (``product_id``); the product lives in the
main database, so the page fetches every product it shows in one batched query, through
the query cache (``scaling.cache.queries.cached_query``), never one query per notification.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.urls import reverse

from catalog.models import Product
from notifications.models import Notification
from scaling.cache.queries import cached_query

PAGE_SIZE = 50


@dataclass(frozen=True)
class ProductLink:
    name: str
    url: str


def unread_count(user_id: int) -> int:
    """How many of the user's notifications are unread: one COUNT on a partial index, on their shard."""
    return Notification.objects.for_user(user_id).filter(read_at__isnull=True).count()


def notifications_of(user: AbstractBaseUser, limit: int = PAGE_SIZE) -> list[Notification]:
    """The user's newest notifications, newest first, each with ``.product`` (a ``ProductLink`` or None)."""
    notifications = list(Notification.objects.for_user(user.pk).order_by("-created_at", "-id")[:limit])
    products = products_by_id({n.product_id for n in notifications if n.product_id is not None})
    for notification in notifications:
        notification.product = products.get(notification.product_id)
    return notifications


def products_by_id(product_ids: set[int]) -> dict[int, ProductLink]:
    """The products with these ids, from the main database in one (cached) query."""
    if not product_ids:
        return {}
    rows = cached_query(Product.objects.filter(pk__in=sorted(product_ids)).values_list("pk", "name", "slug"))
    return {pk: ProductLink(name, reverse("catalog:product", args=[slug])) for pk, name, slug in rows}
