"""Catalog fixtures: small factories that write through the services, like the app does."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from accounts import services as accounts_services
from catalog import services
from catalog.models import Category, Product

PASSWORD = "a-long-test-password-42"
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
def make_user():
    def make(username: str | None = None, display_name: str = ""):
        user = accounts_services.create_user(
            username=username or f"user{next(_numbers)}", email="someone@example.com", password=PASSWORD
        )
        if display_name:
            accounts_services.update_profile(user, display_name=display_name, bio="")
        return user

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice", display_name="Alice A.")


@pytest.fixture
def bob(make_user):
    return make_user("bob")
