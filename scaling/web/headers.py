"""Response headers every replica sets alike: who served it, and who may cache it."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control


class ServedByMiddleware:
    """Adds ``X-Served-By: <replica id>``; outermost, so errors and health checks carry it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.replica_id = settings.HERD_REPLICA_ID

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response["X-Served-By"] = self.replica_id
        return response


class PrivateByDefaultMiddleware:
    """No response lands in a shared cache or CDN unless its view says it may.

    A response without ``Cache-Control`` becomes ``private, no-cache``. A response that
    read a session sent with the request, or that sets any cookie (a CSRF token, a
    flash message, a session), is never ``public``, whatever the view said: it may hold
    that visitor's data, and a shared cache would hand their cookie to others. Views
    that serve the same bytes to everyone opt in explicitly (``public_when_anonymous``,
    content-addressed files, static files). Django's session middleware adds
    ``Vary: Cookie`` to every response that read the session.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            patch_cache_control(response, private=True, no_cache=True)
        elif "public" in response["Cache-Control"] and (response.cookies or self._read_a_session(request)):
            directives = [d.strip() for d in response["Cache-Control"].split(",")]
            kept = [d for d in directives if d != "public" and not d.startswith("s-maxage")]
            response["Cache-Control"] = ", ".join(["private", *kept])
        return response

    @staticmethod
    def _read_a_session(request: HttpRequest) -> bool:
        session = getattr(request, "session", None)
        return session is not None and session.accessed and settings.SESSION_COOKIE_NAME in request.COOKIES
