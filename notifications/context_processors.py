"""The unread count in every page's header."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from notifications import selectors


def unread_notifications(request: HttpRequest) -> dict:
    """``unread_notifications``: the user's unread count, for logged-in users only.

    Lazy: the one COUNT runs only if the template shows it, and never for anonymous
    visitors (whose pages may be shared by caches).
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"unread_notifications": SimpleLazyObject(lambda: selectors.unread_count(user.pk))}
