"""``/media/`` (public, content-addressed files only), ``robots.txt``, and error pages
rendered without the request (no second CSRF check, no session read).
"""

import mimetypes
import sys
from collections.abc import Iterator

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views.decorators.http import require_safe
from django_redis.exceptions import ConnectionInterrupted
from psycopg import OperationalError as PsycopgOperationalError
from psycopg.errors import AdminShutdown, CannotConnectNow, CrashShutdown, ReadOnlySqlTransaction
from redis.exceptions import RedisError

from scaling.db.replicas import CONNECTION_ERRORS, primary_health
from scaling.web.storage import is_public_name, read_stored_file

# What a replica cannot do without and cannot fix: the state Redis (sessions, the
# read-your-writes positions, log-in throttles). The cache Redis never raises.
UNAVAILABLE_ERRORS = (RedisError, ConnectionInterrupted)
# A primary changing hands (a failover's instant, a switchover): its server shut the session
# down or does not take one yet, however the address answers by the time the error page asks.
PRIMARY_CHANGING_ERRORS = (AdminShutdown, CrashShutdown, CannotConnectNow)
RETRY_AFTER_SECONDS = 5
# A write while a primary is unreachable (read-only mode: reads still answer from replicas).
READ_ONLY_MESSAGE = (
    "Herd is read-only for a moment: your change was not saved. Everything saved before is safe;"
    " please try again in a few seconds."
)

IMMUTABLE = "public, max-age=31536000, immutable"


@require_safe
def robots_txt(request: HttpRequest) -> HttpResponse:
    """The smallest real page: through the whole stack, the same for everyone
    (``settings.ROBOTS_DISALLOW``: the paths crawlers are asked to leave alone;
    ``settings.ROBOTS_ALLOW``: the pages under those they may read). The Allow lines come
    first: a crawler that takes the first matching line (Python's robotparser) and one that
    takes the longest (Google, Lighthouse) read the same rules."""
    rules = [f"Allow: {path}\n" for path in settings.ROBOTS_ALLOW]
    rules += [f"Disallow: {path}\n" for path in settings.ROBOTS_DISALLOW]
    body = "User-agent: *\n" + "".join(rules)
    response = HttpResponse(body, content_type="text/plain")
    response["Cache-Control"] = "public, max-age=3600"
    return response


@require_safe
def stored_file(request: HttpRequest, name: str) -> HttpResponse:
    if not is_public_name(name):
        raise Http404("No such file")
    etag = f'"{name}"'
    if request.headers.get("If-None-Match") == etag:
        # Content-addressed: the name alone says the client's copy is current.
        response = HttpResponse(status=304)
    else:
        content = read_stored_file(name)
        if content is None:
            raise Http404("No such file")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response = HttpResponse(content, content_type=content_type)
    response["ETag"] = etag
    response["Cache-Control"] = IMMUTABLE
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        yield error
        seen.add(id(error))
        error = error.__cause__ or error.__context__


def _caused_by(error: BaseException | None, kinds: tuple[type[BaseException], ...]) -> bool:
    return any(isinstance(cause, kinds) for cause in _causes(error))


def _connection_lost(error: BaseException | None) -> bool:
    """The database connection itself failed (libpq's own error, without a SQLSTATE: closed,
    reset, cut by the load balancer), or its server ended the session or took none
    (``PRIMARY_CHANGING_ERRORS``): transient, whatever the server answers a moment later."""
    return any(
        isinstance(cause, PsycopgOperationalError)
        and (cause.sqlstate is None or isinstance(cause, PRIMARY_CHANGING_ERRORS))
        for cause in _causes(error)
    )


def error_page(status: int, title: str, message: str) -> HttpResponse:
    return HttpResponse(render_to_string("error.html", {"title": title, "message": message}), status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    return error_page(400, "Bad request", "The request could not be understood. Nothing was changed.")


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    return error_page(403, "Forbidden", "You may not see this page.")


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return error_page(404, "Not found", "There is nothing at this address.")


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: a clear 503 page when the session store or a primary database
    (the main one, a shard's) is unreachable, changing hands or still a standby, else a 500.

    A logged-in page cannot be served while its session cannot be read, nor a write
    while its primary is away (reads go on from replicas: read-only mode); both are
    temporary (a restart, a failover, a network blip), so the answer says so, asks to
    retry (``Retry-After``) and shows no traceback.
    """
    error = sys.exc_info()[1]
    if _caused_by(error, UNAVAILABLE_ERRORS):
        message = None  # the page's own words: the session
    elif _connection_lost(error) or (_caused_by(error, CONNECTION_ERRORS) and primary_health.unreachable()):
        # A lost connection is the 503 even when the primary answers by now: a failover's
        # instant (HAProxy cuts the old primary's sessions, the new one answers a moment later).
        message = READ_ONLY_MESSAGE
    elif _caused_by(error, (ReadOnlySqlTransaction,)) and primary_health.standing_by():
        # A write the primary's address took to a standby (before its promotion); a write
        # through a replica's alias (a bug) stays a 500.
        message = READ_ONLY_MESSAGE
    else:
        return error_page(500, "Server error", "Something went wrong on our side. Please try again later.")
    response = HttpResponse(render_to_string("503.html", {"message": message}), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response
