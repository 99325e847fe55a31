"""Background jobs of the catalog (Dramatiq actors, run by ``manage.py rundramatiq``)."""

import dramatiq

from catalog.models import Product
from catalog.pages import product_pages
from scaling.db import consistency


@dramatiq.actor(max_retries=3, min_backoff=1000)
def rebuild_product_pages(slugs: list[str]) -> None:
    """Build flushed product pages ahead of their next reader. Idempotent.

    Each build reads at least the position of the write that flushed it
    (``scaling.cache``), so a lagging replica cannot rebuild an old page. The job runs
    right after that write: it first gives the replica a moment to replay it, so the
    builds read the replica rather than the primary.
    """
    consistency.wait_for_replica(timeout=1.0)
    for slug in slugs:
        try:
            product_pages.warm(slug)
        except Product.DoesNotExist:
            continue  # deleted since: nothing to prepare
