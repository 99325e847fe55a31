"""The app's URLs with Django's ``cache_page`` on the catalog pages (the index, the product
lists and the product page), for bench/baseline_settings.py. ``cache_page`` stores only
responses that are not private, and the catalog views make only their anonymous responses
public (``scaling.web.edge.public_when_anonymous``): visitors without a session are answered
from the cache for ``BASELINE_CACHE_SECONDS``, a shopper with one by the view itself."""

from django.conf import settings
from django.urls import URLPattern, include, path
from django.views.decorators.cache import cache_page

from catalog import urls as catalog_urls
from config.urls import handler400, handler403, handler404, handler500  # noqa: F401
from config.urls import urlpatterns as herd_urlpatterns

CACHED = {"index", "products", "category", "product"}


def _catalog(pattern: URLPattern) -> URLPattern:
    if pattern.name not in CACHED:
        return pattern
    return path(str(pattern.pattern), cache_page(settings.BASELINE_CACHE_SECONDS)(pattern.callback), name=pattern.name)


urlpatterns = [
    path("", include(([_catalog(p) for p in catalog_urls.urlpatterns], catalog_urls.app_name))),
    *(p for p in herd_urlpatterns if getattr(p, "app_name", None) != catalog_urls.app_name),
]
