"""Every response names the replica that served it."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


class ServedByMiddleware:
    """Adds ``X-Served-By: <replica id>``; outermost, so errors and health checks carry it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.replica_id = settings.HERD_REPLICA_ID

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response["X-Served-By"] = self.replica_id
        return response
