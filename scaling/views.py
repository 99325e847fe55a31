"""Serves files from the database storage (the local herd; production serves from S3)."""

import mimetypes

from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from scaling.storage import read_stored_file

IMMUTABLE = "public, max-age=31536000, immutable"


@require_safe
def robots_txt(request: HttpRequest) -> HttpResponse:
    """The smallest real page: through the whole stack, the same for everyone."""
    response = HttpResponse("User-agent: *\nDisallow: /accounts/\nDisallow: /admin/\n", content_type="text/plain")
    response["Cache-Control"] = "public, max-age=3600"
    return response


@require_safe
def stored_file(request: HttpRequest, name: str) -> HttpResponse:
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
