"""The catalog's kinds of job (registered with ``jobs.kinds``): CSV import and export, cache warming.

Each ``apply`` is idempotent, as ``jobs.kinds`` asks: an import upserts by slug (and
gives a product a picture from its zip archive only if it does not show it yet), an
export saves its file under a new random name that only the finishing attempt records
(an attempt that crashed after saving leaves a file no job names and nobody can guess),
warming only fills caches. Import and warming are staff-only.
"""

from __future__ import annotations

import math

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile

from accounts.pictures import DecodersBusy
from catalog import cache as catalog_cache
from catalog import csv_format, images
from catalog import selectors as catalog_selectors
from catalog import services as catalog_services
from catalog.models import Product
from catalog.pages import product_pages
from jobs.forms import StartJobForm
from jobs.kinds import Apply, JobRefused, Kind, Outcome, register
from jobs.models import Job
from jobs.progress import Progress
from scaling.web.storage import private_name, private_storage

IMPORT = "catalog_import"
EXPORT = "catalog_export"
CACHE_WARM = "cache_warm"

DEFAULT_WARM_PRODUCTS = 500
MAX_WARM_PRODUCTS = 10_000
_MB = 1024 * 1024


def catalog_import(job: Job, progress: Progress) -> Apply:
    try:
        with private_storage().open(job.input_name) as stored:
            data = stored.read()
    except (FileNotFoundError, ValueError) as error:
        raise JobRefused("The uploaded file is no longer stored; upload it again.") from error
    checked, names = {}, None
    if images.is_archive(data):
        try:
            data, archived = images.read_archive(data)
            checked = images.check_pictures(archived)
        except ValidationError as error:
            raise JobRefused(" ".join(error.messages)) from error
        names = frozenset(archived)
    try:
        rows = csv_format.parse(data, progress.step(0, 40), pictures=names)
    except csv_format.FileRefused as refusal:
        result = {"bad_rows": refusal.bad_rows, "bad_row_count": refusal.bad_row_count} if refusal.bad_rows else {}
        raise JobRefused(refusal.message, result) from refusal

    def apply() -> Outcome:
        result = csv_format.import_rows(rows, progress.step(40, 99))
        if names is not None:
            used = {row.image for row in rows if row.image}
            image_files = {name: catalog_services.image_file_for(checked[name]) for name in sorted(used)}
            result["pictures"] = csv_format.add_pictures(rows, image_files)
        return Outcome(result)

    return apply


def catalog_export(job: Job, progress: Progress) -> Apply:
    data, count = csv_format.export_csv(progress.step(0, 95))
    # A name nobody can guess, in the private storage: only the job's page hands it out.
    name = private_name("exports", ".csv")

    def apply() -> Outcome:
        saved = private_storage().save(name, ContentFile(data))
        return Outcome({"products": count, "bytes": len(data)}, output_name=saved)

    return apply


def cache_warm(job: Job, progress: Progress) -> Apply:
    """What ``manage.py warm_cache`` does: the category index, the first list pages, the most visited products."""
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
            product_pages.warm(slug)
            warmed += 1
        except Product.DoesNotExist:
            pass  # deleted since it was visited
        page_step(number, len(slugs))
    result = {"product_pages": warmed, "list_pages": len(categories) + 1}
    return lambda: Outcome(result)


# ----------------------------------------------------------------------------- start forms


class CatalogImportForm(StartJobForm):
    file = forms.FileField(
        label="CSV file, or a zip archive of a CSV file and pictures",
        help_text=(
            "Columns: name, slug, category, price, stock, description. UTF-8, at most 10 MB. In a zip archive the"
            " CSV may add the columns image (a JPEG, PNG or WebP file in the archive) and image_alt."
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv,.zip,application/zip"}),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        limit = settings.HERD_UPLOAD_MAX_BYTES
        # The upload handler kept at most limit + 1 bytes, and .size tells the true length.
        if (upload.size or 0) > limit:
            raise self._too_large(upload.size)
        upload.seek(0)
        data = upload.read(limit + 1)
        if len(data) > limit:
            raise self._too_large(len(data))
        try:
            if images.is_archive(data):
                csv_data, archived = images.read_archive(data)
                csv_format.check_file(csv_data, csv_format.PICTURE_COLUMNS)
                images.check_pictures(archived)  # as a profile picture is checked, in the request
            else:
                csv_format.check_file(data)
        except csv_format.FileRefused as refused:
            raise ValidationError(refused.message, code="refused") from refused
        except DecodersBusy as busy:
            raise ValidationError("The server is busy with other pictures; please try again.", code="busy") from busy
        self._data = data
        return upload

    @staticmethod
    def _too_large(size: int) -> ValidationError:
        return ValidationError(
            "The file is %(size).1f MB; the limit is %(limit)s MB.",
            code="too_large",
            # Rounded up, so a file just over the limit never reads as "10.0 MB; the limit is 10 MB".
            params={"size": math.ceil(size * 10 / _MB) / 10, "limit": f"{settings.HERD_UPLOAD_MAX_BYTES / _MB:g}"},
        )

    def input_bytes(self) -> bytes | None:
        return self._data


class CacheWarmForm(StartJobForm):
    products = forms.IntegerField(
        label="Product pages", min_value=1, max_value=MAX_WARM_PRODUCTS, initial=DEFAULT_WARM_PRODUCTS
    )

    def params(self) -> dict:
        return {"products": self.cleaned_data["products"]}


# ----------------------------------------------------------------------------- registration


register(
    Kind(
        name=EXPORT,
        label="Catalog export",
        handler=catalog_export,
        start_label="Export the catalog as CSV",
        summary=lambda result: f"{result.get('products', 0)} products exported; download the file from the job's page.",
        output_suffix=".csv",
        output_content_type="text/csv; charset=utf-8",
    )
)
register(
    Kind(
        name=IMPORT,
        label="Catalog import",
        handler=catalog_import,
        start_label="Import",
        heading="Import products (staff)",
        form=CatalogImportForm,
        staff_only=True,
        input_suffix=".csv",
        transient=(DecodersBusy,),
        summary=lambda result: (
            f"{result.get('rows', 0)} products imported: {result.get('created', 0)} new, "
            f"{result.get('updated', 0)} updated."
            + (f" {result['pictures']} pictures added." if "pictures" in result else "")
        ),
    )
)
register(
    Kind(
        name=CACHE_WARM,
        label="Cache warming",
        handler=cache_warm,
        start_label="Warm the cache",
        heading="Warm the cache (staff)",
        form=CacheWarmForm,
        staff_only=True,
        summary=lambda result: (
            f"Warmed {result.get('product_pages', 0)} product pages and {result.get('list_pages', 0)} lists."
        ),
    )
)
