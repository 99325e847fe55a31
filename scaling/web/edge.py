"""Anonymous pages prepared for shared caches, without ever sharing a user's page.

``public_when_anonymous`` marks a view's 200s ``public`` (``s-maxage``,
``stale-while-revalidate``) for visitors without a session, ``private`` otherwise;
``AnonymousPageMiddleware`` answers a cookieless GET of a warm page from its cached
bytes before sessions and the view run (docs/CACHING.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils.cache import patch_cache_control, patch_vary_headers

S_MAXAGE, STALE_WHILE_REVALIDATE = 60, 300


def public_when_anonymous(s_maxage: int = S_MAXAGE, stale_while_revalidate: int = STALE_WHILE_REVALIDATE) -> Callable:
    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            response = view(request, *args, **kwargs)
            if (
                response.status_code == 200
                and settings.SESSION_COOKIE_NAME not in request.COOKIES
                # A CSP nonce in shared bytes would be one nonce for every visitor.
                and not getattr(request, "csp_nonce", None)  # evaluated: a nonce was used
            ):
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


# url name -> (path prefix, the page's cached bytes for the resolved kwargs or None)
_anonymous_pages: dict[str, tuple[str, Callable[..., bytes | None]]] = {}


def register_anonymous_page(url_name: str, prefix: str, cached: Callable[..., bytes | None]) -> None:
    """Declare that the view named ``url_name`` gives every cookieless visitor the bytes
    ``cached(**kwargs)`` returns while they are current (None: not cached now). Its
    paths start with ``prefix``; the view must make the same response from them
    (``anonymous_page``), decorated with ``public_when_anonymous()``."""
    _anonymous_pages[url_name] = (prefix, cached)


def anonymous_page(content: bytes) -> HttpResponse:
    """The response every cookieless visitor gets for these bytes; the view passes it
    through ``public_when_anonymous``, which marks it the same way."""
    response = HttpResponse(content)
    patch_cache_control(response, public=True, s_maxage=S_MAXAGE, stale_while_revalidate=STALE_WHILE_REVALIDATE)
    patch_vary_headers(response, ["Cookie"])
    return response


class AnonymousPageMiddleware:
    """Serves registered pages to cookieless GETs from the cache, ahead of the session,
    CSRF, authentication and message middleware, which have nothing to do for them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            request.method in ("GET", "HEAD")
            and not request.COOKIES
            and "HTTP_AUTHORIZATION" not in request.META
            and (content := self._cached(request.path_info)) is not None
        ):
            request.get_host()  # a Host outside ALLOWED_HOSTS is refused (400), as on the whole way
            return anonymous_page(content)
        return self.get_response(request)

    @staticmethod
    def _cached(path: str) -> bytes | None:
        if not any(path.startswith(prefix) for prefix, _ in _anonymous_pages.values()):
            return None
        try:
            match = resolve(path)
        except Resolver404:
            return None
        page = _anonymous_pages.get(match.view_name)
        return page[1](**match.kwargs) if page is not None else None
