"""The product page cache: ``product_pages``, the assembled data of each product page
(``selectors.product_page``) cached whole by ``scaling.cache.objects.ObjectCache``, keyed by slug.

What flushes it is ``catalog.cache``; what rebuilds flushed pages is ``catalog.tasks``.
Imports go one way: models ← selectors ← pages ← tasks ← cache.
"""

from __future__ import annotations

from catalog import selectors
from scaling.cache.objects import ObjectCache

product_pages = ObjectCache("product-page", selectors.ProductPageData, selectors.product_page, fresh_seconds=600)
