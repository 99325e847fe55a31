"""Catalog fixtures: small factories that write through the services, like the app does."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from catalog import services
from catalog.models import Category, Product

_numbers = itertools.count(1)


@pytest.fixture
def make_category():
    def make(name: str | None = None) -> Category:
        number = next(_numbers)
        name = name or f"Category {number}"
        return services.create_category(name=name, slug=f"category-{number}")

    return make


@pytest.fixture
def category(make_category) -> Category:
    return make_category("Lamps")


@pytest.fixture
def make_product(category):
    def make(name: str | None = None, *, price: str = "10.00", stock: int = 5, in_category=None) -> Product:
        number = next(_numbers)
        return services.create_product(
            category=in_category or category,
            name=name or f"Product {number}",
            slug=f"product-{number}",
            price=Decimal(price),
            stock=stock,
        )

    return make


@pytest.fixture
def product(make_product) -> Product:
    return make_product("Brass Desk Lamp", price="49.90")


@pytest.fixture
def alice(make_user):
    """Alice as reviews show her: by her display name."""
    return make_user("alice", display_name="Alice A.")
