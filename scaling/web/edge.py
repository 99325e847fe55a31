"""Anonymous pages prepared for shared caches, without ever sharing a user's page.

``public_when_anonymous`` marks a view's 200s ``public`` (``s-maxage``,
``stale-while-revalidate``) for visitors without a session, ``private`` otherwise;
``AnonymousPageMiddleware`` answers a cookieless GET of a warm page from its cached
bytes before sessions and the view run (docs/CACHING.md). ``purge_on_commit(paths)``
has every HAProxy edge of ``HERD_EDGE_ADMIN`` look those paths up under a new generation
once the transaction commits (a new random number in its table ``edge_written``, set
through its runtime API: deploy/haproxy.cfg.template), so no copy stored before is read.
A purge that fails is logged, never raised: the edge's
5 s bounds what it keeps.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import socket
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils.cache import patch_cache_control, patch_vary_headers

logger = logging.getLogger(__name__)

S_MAXAGE, STALE_WHILE_REVALIDATE = 60, 300
# deploy/haproxy.cfg.template's table of paths written in the last seconds.
EDGE_TABLE = "edge_written"
# Paths a purge may name: one word of the runtime API each (no space, no ';'), within the
# table's key length.
_PURGEABLE = re.compile(r"/[A-Za-z0-9._~/%-]{0,250}")
# Commands per runtime API line (HAProxy reads one line of up to a buffer, 16 kB).
_PER_LINE = 50
# A write that changes more pages than this leaves the rest to the edge's 5 s.
MAX_PURGED_PATHS = 5000


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


def purge_on_commit(paths: Iterable[str]) -> None:
    """Once the current transaction commits (at once outside one), have every edge of
    ``HERD_EDGE_ADMIN`` serve none of its copies of these paths (query strings included)
    stored before. Register it after the app's own caches are flushed on commit."""
    paths = sorted(set(paths))
    if paths and settings.HERD_EDGE_ADMIN:
        transaction.on_commit(lambda: purge(paths), robust=True)


def purge(paths: list[str]) -> None:
    """Give ``paths`` a new generation on every edge now; failures are logged, never raised."""
    valid = [path for path in paths if _PURGEABLE.fullmatch(path)]
    if len(valid) < len(paths):
        logger.warning("edge purge: %d paths not purgeable, skipped", len(paths) - len(valid))
    if len(valid) > MAX_PURGED_PATHS:
        logger.warning("edge purge: %d paths, the first %d purged", len(valid), MAX_PURGED_PATHS)
        valid = valid[:MAX_PURGED_PATHS]
    generation = 1 + secrets.randbelow(2**31 - 1)  # gpc0 is 32 bits; 0 is "not written"
    for host, port in settings.HERD_EDGE_ADMIN:
        for start in range(0, len(valid), _PER_LINE):
            chunk = valid[start : start + _PER_LINE]
            commands = [f"set table {EDGE_TABLE} key {path} data.gpc0 {generation}" for path in chunk]
            try:
                answer = _runtime_api(host, port, ";".join(commands))
            except OSError as error:
                logger.warning("edge purge: %s:%d unreachable (%s); its copies expire in seconds", host, port, error)
                break
            if answer.strip():
                logger.warning("edge purge: %s:%d answered %r", host, port, answer.strip()[:200])


def _runtime_api(host: str, port: int, line: str) -> str:
    timeout = settings.HERD_EDGE_PURGE_TIMEOUT
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(line.encode() + b"\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer.decode(errors="replace")
