"""What each kind of job does, split in two so a redelivered message cannot do it twice.

A handler ``handler(job, progress)`` does the slow part that changes nothing (reading,
checking, building) and returns ``apply``: the effect, which ``jobs.tasks`` runs in one
transaction on the main database, committed before the job is marked finished (in its
owner's shard database, with the notification). A redelivered message may therefore
run ``apply`` again for a job it already applied: every ``apply`` is idempotent (an
import upserts by slug, a thumbnail is content-addressed, an export saves a file under a
new random name that only the finishing attempt records: an attempt that crashed after
saving leaves a file that no job names and nobody can guess).

A handler raises ``JobRefused`` when the job cannot be done as asked (a bad file, a
missing picture): the job fails at once with that reason, and is not retried. Any
other exception is left to the retry policy in ``jobs.tasks``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from accounts.models import Profile
from accounts.pictures import process_picture
from catalog import cache as catalog_cache
from catalog import selectors as catalog_selectors
from catalog.models import Product
from jobs import catalog_csv
from jobs.models import Job
from jobs.progress import Progress
from scaling.web.storage import private_name, private_storage

DEFAULT_WARM_PRODUCTS = 500
MAX_WARM_PRODUCTS = 10_000


class JobRefused(Exception):
    """The job cannot be done as asked: it fails with ``reason`` (shown to its owner), without retrying."""

    def __init__(self, reason: str, result: dict | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result or {}


@dataclass(frozen=True)
class Outcome:
    result: dict = field(default_factory=dict)
    output_name: str = ""


Apply = Callable[[], Outcome]
Handler = Callable[[Job, Progress], Apply]


def _require_staff(job: Job) -> None:
    # Checked again when the job runs: the owner may have lost the right since starting it.
    # The owner lives in the main database: an application-side join by id.
    if not get_user_model().objects.filter(pk=job.owner_id, is_staff=True).exists():
        raise JobRefused(f"Only staff can run a {job.get_kind_display().lower()}.")


def catalog_import(job: Job, progress: Progress) -> Apply:
    _require_staff(job)
    try:
        with private_storage().open(job.input_name) as stored:
            data = stored.read()
    except (FileNotFoundError, ValueError) as error:
        raise JobRefused("The uploaded file is no longer stored; upload it again.") from error
    try:
        rows = catalog_csv.parse(data, progress.step(0, 40))
    except catalog_csv.FileRefused as refusal:
        result = {"bad_rows": refusal.bad_rows, "bad_row_count": refusal.bad_row_count} if refusal.bad_rows else {}
        raise JobRefused(refusal.message, result) from refusal

    def apply() -> Outcome:
        return Outcome(catalog_csv.import_rows(rows, progress.step(40, 99)))

    return apply


def catalog_export(job: Job, progress: Progress) -> Apply:
    data, count = catalog_csv.export_csv(progress.step(0, 95))
    # A name nobody can guess, in the private storage: only the job's page hands it out.
    name = private_name("exports", ".csv")

    def apply() -> Outcome:
        saved = private_storage().save(name, ContentFile(data))
        return Outcome({"products": count, "bytes": len(data)}, output_name=saved)

    return apply


def picture_thumbnail(job: Job, progress: Progress) -> Apply:
    """Rebuild the owner's thumbnail from their stored picture (the same code as an upload)."""
    profile = Profile.objects.filter(user_id=job.owner_id).first()
    if profile is None or not profile.picture:
        raise JobRefused("Your profile has no picture to make a thumbnail from.")
    picture_name = profile.picture.name
    try:
        with default_storage.open(picture_name) as stored:
            data = stored.read()
    except FileNotFoundError as error:
        raise JobRefused("Your picture's file is missing; upload your picture again.") from error
    progress(30)
    try:
        thumbnail = process_picture(ContentFile(data)).thumbnail
    except ValidationError as error:
        raise JobRefused(f"Your stored picture cannot be read: {' '.join(error.messages)}") from error
    progress(80)
    # Content-addressed like every picture: a name never changes meaning, so it is cached forever.
    name = f"avatars/thumbnails/{hashlib.sha256(thumbnail).hexdigest()}.webp"

    def apply() -> Outcome:
        locked = Profile.objects.select_for_update().get(pk=profile.pk)
        if locked.picture.name != picture_name:
            # A new upload came in meanwhile, with a thumbnail made from it: keep that one.
            return Outcome({"thumbnail": locked.thumbnail.name, "kept": "the picture changed while this job ran"})
        if not default_storage.exists(name):
            default_storage.save(name, ContentFile(thumbnail))
        locked.thumbnail.name = name
        locked.save(update_fields=["thumbnail", "updated_at"])
        return Outcome({"thumbnail": name, "bytes": len(thumbnail)})

    return apply


def cache_warm(job: Job, progress: Progress) -> Apply:
    """What ``manage.py warm_cache`` does: the category index, the first list pages, the most visited products."""
    _require_staff(job)
    try:
        count = int(job.params.get("products", DEFAULT_WARM_PRODUCTS))
    except (TypeError, ValueError) as error:
        raise JobRefused("The number of product pages to warm must be a whole number.") from error
    count = max(1, min(count, MAX_WARM_PRODUCTS))

    categories = catalog_selectors.categories()
    catalog_selectors.product_list()
    list_step = progress.step(0, 20)
    for number, category in enumerate(categories, start=1):
        catalog_selectors.product_list(category_slug=category.slug)
        list_step(number, len(categories))
    slugs = catalog_cache.most_visited(count)
    page_step = progress.step(20, 99)
    warmed = 0
    for number, slug in enumerate(slugs, start=1):
        try:
            catalog_cache.product_pages.warm(slug)
            warmed += 1
        except Product.DoesNotExist:
            pass  # deleted since it was visited
        page_step(number, len(slugs))
    result = {"product_pages": warmed, "list_pages": len(categories) + 1}
    return lambda: Outcome(result)


HANDLERS: dict[str, Handler] = {
    Job.Kind.CATALOG_IMPORT: catalog_import,
    Job.Kind.CATALOG_EXPORT: catalog_export,
    Job.Kind.PICTURE_THUMBNAIL: picture_thumbnail,
    Job.Kind.CACHE_WARM: cache_warm,
}
