"""Every password log-in goes through ``ThrottledModelBackend``: Django's ModelBackend with
the log-in throttle around the password check, per (account, address) and per address,
in the state Redis. The rules and their tests: docs/SECURITY.md.

The user of each request is read with their profile in one query (every page's header
shows the display name and the thumbnail).
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest

from scaling.web import throttle


def login_counters(account: str, address: str) -> list[throttle.Counter]:
    """The pair's counter first (the one a success clears), then the address's."""
    lock, longest, forget = (
        settings.HERD_LOGIN_LOCK_SECONDS,
        settings.HERD_LOGIN_MAX_LOCK_SECONDS,
        settings.HERD_LOGIN_FORGET_SECONDS,
    )
    pair = throttle.Backoff("login-pair", settings.HERD_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS, lock, longest, forget)
    per_address = throttle.Backoff("login-address", settings.HERD_LOGIN_FAILURES_PER_ADDRESS, lock, longest, forget)
    return [pair.counter(account, address), per_address.counter(address)]


class ThrottledModelBackend(ModelBackend):
    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs
    ) -> AbstractBaseUser | None:
        user_model = get_user_model()
        if username is None:
            username = kwargs.get(user_model.USERNAME_FIELD)
        if username is None or password is None:
            return None
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            user = None
        counters = login_counters(f"user:{user.pk}" if user else f"name:{username}", throttle.client_address(request))
        wait = throttle.locked_for(counters)
        if wait:
            raise throttle.RateLimited(wait, "Too many failed log-in attempts.")
        if user is None:
            # As ModelBackend: hash once, so an unknown name takes as long as a known one (#20760).
            user_model().set_password(password)
        elif user.check_password(password):
            throttle.clear(counters[0])
            return user if self.user_can_authenticate(user) else None
        throttle.count_failure(counters)
        return None

    async def aauthenticate(self, request: HttpRequest | None, **kwargs) -> AbstractBaseUser | None:
        # ModelBackend's own async version would skip the throttle.
        return await sync_to_async(self.authenticate)(request, **kwargs)

    def get_user(self, user_id) -> AbstractBaseUser | None:
        user_model = get_user_model()
        try:
            user = user_model._default_manager.select_related("profile").get(pk=user_id)
        except user_model.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None

    async def aget_user(self, user_id) -> AbstractBaseUser | None:
        return await sync_to_async(self.get_user)(user_id)
