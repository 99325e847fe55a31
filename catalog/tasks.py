"""Background jobs of the catalog (Dramatiq actors, run by ``manage.py rundramatiq``)."""

import dramatiq

from catalog.cache import product_pages
from catalog.models import Product


@dramatiq.actor(max_retries=3, min_backoff=1000)
def rebuild_product_pages(slugs: list[str]) -> None:
    """Build flushed product pages ahead of their next reader. Idempotent.

    Each build reads at least the position of the write that flushed it
    (``scaling.cache``), so a lagging replica cannot rebuild an old page.
    """
    for slug in slugs:
        try:
            product_pages.warm(slug)
        except Product.DoesNotExist:
            continue  # deleted since: nothing to prepare
