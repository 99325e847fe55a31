"""Pages prepared for shared caches and CDNs, without ever sharing a user's page.

``public_when_anonymous`` marks a view's 200 responses ``public`` with ``s-maxage``
and ``stale-while-revalidate`` for visitors without a session, so HAProxy, a CDN or
the OpenShift router may serve them; for a visitor with a session they are
``private`` (``scaling.middleware.PrivateByDefaultMiddleware`` enforces it again).
Django's ``ConditionalGetMiddleware`` adds an ``ETag`` and answers ``If-None-Match``
with 304, so a revalidation costs no body.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control, patch_vary_headers


def public_when_anonymous(s_maxage: int = 60, stale_while_revalidate: int = 300) -> Callable:
    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            response = view(request, *args, **kwargs)
            if response.status_code == 200 and settings.SESSION_COOKIE_NAME not in request.COOKIES:
                patch_cache_control(
                    response,
                    public=True,
                    s_maxage=s_maxage,
                    stale_while_revalidate=stale_while_revalidate,
                )
            else:
                patch_cache_control(response, private=True, no_cache=True)
            patch_vary_headers(response, ["Cookie"])
            return response

        return wrapped

    return decorator
