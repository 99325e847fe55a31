"""Background jobs of the catalog (Dramatiq actors, run by ``manage.py rundramatiq``)."""

import dramatiq
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from catalog import images
from catalog.models import ImageFile, Product
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


@dramatiq.actor(max_retries=5, min_backoff=1000)
def prepare_image(image_file_id: int) -> None:
    """Prepare every size and format of an uploaded picture (``catalog.images.prepare``). Idempotent.

    Sent on commit of the upload. A picture already prepared is left alone; the files are
    content-addressed, so a second run stores nothing new. Saving ``renditions`` flushes
    the pages of the products that show the picture (``catalog.cache``). ``DecodersBusy``
    (every decode slot of the worker taken) raises, and Dramatiq retries it later.
    """
    found = ImageFile.objects.filter(pk=image_file_id).values_list("original", "prepared_at").first()
    if found is None or found[1] is not None:
        return  # deleted since, or prepared already (a redelivery)
    original = found[0]
    try:
        with default_storage.open(original) as stored:
            data = stored.read()
    except FileNotFoundError:
        return  # nothing to prepare from: the page goes on showing nothing broken
    try:
        renditions = images.prepare(data)
    except ValidationError:
        return  # checked on upload, so only a damaged stored copy: its original stays shown
    with transaction.atomic():
        locked = ImageFile.objects.select_for_update().filter(pk=image_file_id, prepared_at=None).first()
        if locked is not None:
            locked.renditions, locked.prepared_at = renditions, timezone.now()
            locked.save(update_fields=["renditions", "prepared_at"])
