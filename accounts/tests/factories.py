"""Test users, made through ``accounts.services`` as sign-up makes them; the root
``conftest.py`` serves them as fixtures (``make_user``, ``alice``, ``bob``, ``staff``)."""

from __future__ import annotations

import itertools

from django.test import Client

from accounts import services
from accounts.models import User

PASSWORD = "a-long-test-password-42"
_numbers = itertools.count(1)


def make_user(
    username: str | None = None,
    *,
    password: str = PASSWORD,
    display_name: str = "",
    is_staff: bool = False,
    email: str | None = None,
) -> User:
    """A user (``user<n>`` unless named) with a profile, ``<username>@example.com`` unless told."""
    username = username or f"user{next(_numbers)}"
    user = services.create_user(username=username, email=email or f"{username}@example.com", password=password)
    if display_name:
        services.update_profile(user, display_name=display_name, bio="")
    if is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    return user


def logged_in_client(user: User, **client_kwargs) -> Client:
    """A test ``Client`` with ``user``'s session (no log-in form, no throttle)."""
    client = Client(**client_kwargs)
    client.force_login(user)
    return client
