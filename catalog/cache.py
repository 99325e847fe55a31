"""What flushes the product page cache (``catalog.pages``), and the reads of it.

A product page shows its product, its category, its pictures (``ProductImage`` and the
prepared sizes of each ``ImageFile``), the first reviews and their authors' display
names. Saving or deleting any of those, one by one (``post_save``, ``post_delete``) or in
bulk (``scaling.db.bulk_updates.updating``), flushes exactly the pages that show it, on
commit, and enqueues their rebuild (``catalog.tasks``), then purges those pages from the
HAProxy edge (``scaling.web.edge.purge_on_commit``); a product's own change (its price, its
name) purges its category's list page too. ``COPY`` (``seed_catalog``) flushes nothing: it
only adds products, their pictures and their reviews (docs/CACHING.md).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterable

from django.db import transaction
from django.db.models import QuerySet
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver
from django.urls import reverse
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from accounts.models import Profile
from catalog import selectors
from catalog.models import Category, ImageFile, Product, ProductImage, Review
from catalog.pages import product_pages
from catalog.tasks import rebuild_product_pages
from scaling.db import bulk_updates
from scaling.db.consistency import use_primary
from scaling.web import edge

logger = logging.getLogger(__name__)

ANONYMOUS_HTML = "anonymous-html"
_VISITS = "herd:visits:product"
_VISIT_SAMPLE = 16
_VISITS_SECONDS = 7 * 24 * 3600
_REBUILD_BATCH = 200


def anonymous_product_page(slug: str) -> bytes | None:
    """The product page every cookieless visitor gets, while it is cached and current
    (``scaling.web.edge.AnonymousPageMiddleware`` serves it before the view)."""
    html = product_pages.cached(slug, ANONYMOUS_HTML)
    if html is not None:
        note_visit(slug)
    return html


def product_page(slug: str) -> selectors.ProductPageData:
    """The product page's data, from the object cache (built on a miss)."""
    return product_pages.get(slug)


def note_visit(slug: str) -> None:
    """Count a product page view, for ``warm_cache``: a sample of one visit in
    ``_VISIT_SAMPLE``, weighted, so the warm page pays a Redis round trip once in that
    many views (a hint for ranking: sampling and lost counts do no harm)."""
    if random.random() < 1 / _VISIT_SAMPLE:  # noqa: S311 (a sample, not a secret)
        with contextlib.suppress(RedisError):
            # A time to live makes the ranking evictable, like every other cache key.
            get_redis_connection("default").pipeline(transaction=False).zincrby(_VISITS, _VISIT_SAMPLE, slug).expire(
                _VISITS, _VISITS_SECONDS
            ).execute()


def most_visited(count: int) -> list[str]:
    try:
        slugs = get_redis_connection("default").zrevrange(_VISITS, 0, count - 1)
    except RedisError:
        slugs = []
    if slugs:
        return [slug.decode() for slug in slugs]
    # No visits recorded yet (a fresh herd): the most reviewed are the likeliest visited.
    with use_primary():
        return list(Product.objects.order_by("-rating_count", "-id").values_list("slug", flat=True)[:count])


def flush_product_pages(slugs: Iterable[str], categories: Iterable[str] = ()) -> None:
    """On commit: flush these pages, have the worker rebuild them, and purge them (and the
    list pages of ``categories``) from the edge."""
    slugs = sorted(set(slugs))
    if not slugs:
        return
    product_pages.invalidate_on_commit(slugs)
    transaction.on_commit(lambda: _enqueue_rebuild(slugs))
    # After the flush above: a visitor the edge now lets through reads the new page.
    edge.purge_on_commit(
        [reverse("catalog:product", kwargs={"slug": slug}) for slug in slugs]
        + [reverse("catalog:category", kwargs={"slug": slug}) for slug in set(categories)]
    )


def _enqueue_rebuild(slugs: list[str]) -> None:
    for start in range(0, len(slugs), _REBUILD_BATCH):
        try:
            rebuild_product_pages.send(slugs[start : start + _REBUILD_BATCH])
        except Exception:
            # The pages are flushed already; without the job the next reader rebuilds them.
            logger.exception("could not enqueue the rebuild of %d product pages", len(slugs))
            return


def slugs_of_products(queryset: QuerySet) -> list[str]:
    """The slugs of the product pages that rows of ``queryset`` appear on (read on the primary)."""
    with use_primary():
        if queryset.model is Product:
            return list(queryset.values_list("slug", flat=True))
        if queryset.model in (Review, ProductImage):
            return list(Product.objects.filter(id__in=queryset.values("product_id")).values_list("slug", flat=True))
        if queryset.model is Category:
            return list(Product.objects.filter(category__in=queryset.values("id")).values_list("slug", flat=True))
        if queryset.model is ImageFile:
            used_by = ProductImage.objects.filter(image__in=queryset.values("id")).values("product_id")
            return list(Product.objects.filter(id__in=used_by).values_list("slug", flat=True))
    raise TypeError(f"no product pages depend on {queryset.model.__name__}")


@receiver(pre_save, sender=Product, dispatch_uid="catalog.cache.product_slug_before")
def _remember_old_slug(sender, instance: Product, **kwargs) -> None:
    if instance.pk:
        with use_primary():
            before = Product.objects.filter(pk=instance.pk).values_list("slug", "category__slug").first()
        instance._slug_before_save, instance._category_before_save = before or (None, None)


@receiver(post_save, sender=Product, dispatch_uid="catalog.cache.product_saved")
@receiver(post_delete, sender=Product, dispatch_uid="catalog.cache.product_deleted")
def _product_changed(sender, instance: Product, **kwargs) -> None:
    # Its category's list shows its name and price: purged from the edge with its page.
    category = Category.objects.filter(pk=instance.category_id).values_list("slug", flat=True)
    with use_primary():
        categories = [*category, getattr(instance, "_category_before_save", None)]
    flush_product_pages(
        filter(None, [instance.slug, getattr(instance, "_slug_before_save", None)]), filter(None, categories)
    )


@receiver(post_save, sender=Review, dispatch_uid="catalog.cache.review_saved")
@receiver(post_delete, sender=Review, dispatch_uid="catalog.cache.review_deleted")
@receiver(post_save, sender=ProductImage, dispatch_uid="catalog.cache.product_image_saved")
@receiver(post_delete, sender=ProductImage, dispatch_uid="catalog.cache.product_image_deleted")
def _product_part_changed(sender, instance: Review | ProductImage, **kwargs) -> None:
    flush_product_pages(slugs_of_products(Product.objects.filter(pk=instance.product_id)))


@receiver(post_save, sender=ImageFile, dispatch_uid="catalog.cache.image_file_saved")
def _image_file_changed(sender, instance: ImageFile, created: bool = False, **kwargs) -> None:
    # Its sizes are ready: the pages that show the original now show them.
    if not created:
        flush_product_pages(slugs_of_products(ImageFile.objects.filter(pk=instance.pk)))


@receiver(post_save, sender=Category, dispatch_uid="catalog.cache.category_saved")
@receiver(post_delete, sender=Category, dispatch_uid="catalog.cache.category_deleted")
def _category_changed(sender, instance: Category, created: bool = False, **kwargs) -> None:
    if not created:
        flush_product_pages(slugs_of_products(Category.objects.filter(pk=instance.pk)))


@receiver(post_save, sender=Profile, dispatch_uid="catalog.cache.profile_saved")
def _author_changed(sender, instance: Profile, created: bool = False, **kwargs) -> None:
    # A display name shows on the pages of the products its user reviewed.
    if not created:
        flush_product_pages(slugs_of_products(Review.objects.filter(user_id=instance.user_id)))


@receiver(bulk_updates.updating, sender=Product, dispatch_uid="catalog.cache.products_updating")
@receiver(bulk_updates.updating, sender=Review, dispatch_uid="catalog.cache.reviews_updating")
@receiver(bulk_updates.updating, sender=Category, dispatch_uid="catalog.cache.categories_updating")
@receiver(bulk_updates.updating, sender=ProductImage, dispatch_uid="catalog.cache.product_images_updating")
@receiver(bulk_updates.updating, sender=ImageFile, dispatch_uid="catalog.cache.image_files_updating")
def _rows_updating(sender, queryset: QuerySet, **kwargs) -> None:
    flush_product_pages(slugs_of_products(queryset))


@receiver(bulk_updates.updating, sender=Profile, dispatch_uid="catalog.cache.authors_updating")
def _authors_updating(sender, queryset: QuerySet, fields: frozenset[str], **kwargs) -> None:
    if "display_name" in fields:
        flush_product_pages(slugs_of_products(Review.objects.filter(user_id__in=queryset.values("user_id"))))
