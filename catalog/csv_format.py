"""The catalog's CSV format: ``name,slug,category,price,stock,description``; in a zip
archive of the CSV and pictures (``catalog.images.read_archive``), also ``image,image_alt``.

An export imports back unchanged. No exported cell is a spreadsheet formula
(:func:`neutralise`, undone by :func:`restore` on import). :func:`parse` checks every row
before anything is written and refuses a file with any bad row, naming each line;
:func:`import_rows` updates by slug, so importing twice leaves one product per slug.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError
from django.db.models import Max

from catalog import cache as catalog_cache
from catalog import services as catalog_services
from catalog.models import Category, Product, ProductImage
from catalog.selectors import MAX_PRICE

COLUMNS = ("name", "slug", "category", "price", "stock", "description")
# Only in a zip archive's CSV (``catalog.images.read_archive``): a picture in the archive, and its alt text.
PICTURE_COLUMNS = ("image", "image_alt")
MAX_NAME = Product._meta.get_field("name").max_length
MAX_SLUG = Product._meta.get_field("slug").max_length
MAX_CATEGORY_SLUG = Category._meta.get_field("slug").max_length
MAX_CATEGORY_NAME = Category._meta.get_field("name").max_length
MAX_DESCRIPTION = 10_000
MAX_ALT = ProductImage._meta.get_field("alt").max_length
MAX_STOCK = 2**31 - 1  # Product.stock is a PostgreSQL integer
MAX_LISTED_ERRORS = 1000  # bad rows listed on the job; the count covers all of them
BATCH = 1000

# A text cell that a spreadsheet would run, or that only a neutralised cell looks like.
_FORMULA_LIKE = re.compile(r"'*[=+\-@\t\r]")
_SLUG = re.compile(r"^[-a-zA-Z0-9_]+\Z")
_WHOLE_NUMBER = re.compile(r"^[0-9]+\Z")

Report = Callable[[int, int], None]  # (done, total): how far a step has got


class FileRefused(Exception):
    """The file cannot be imported; ``message`` says why, ``bad_rows`` lists bad rows."""

    def __init__(self, message: str, bad_rows: list[dict] | None = None, bad_row_count: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.bad_rows = bad_rows or []
        self.bad_row_count = bad_row_count


@dataclass(frozen=True)
class ProductRow:
    line: int
    name: str
    slug: str
    category: str
    price: Decimal
    stock: int
    description: str
    image: str = ""  # a picture's name in the zip archive the CSV came in
    image_alt: str = ""


def neutralise(value: str) -> str:
    """The text cell as the export writes it: never the start of a formula."""
    return "'" + value if _FORMULA_LIKE.match(value) else value


def restore(value: str) -> str:
    """The inverse of :func:`neutralise`, for the text cells the import reads."""
    return value[1:] if value.startswith("'") and _FORMULA_LIKE.match(value, 1) else value


# ----------------------------------------------------------------------------- reading


def _line_at_end_of(text: str) -> int:
    """The number of the line ``text`` ends on. Lines end at "\\r\\n", "\\n" or a lone
    "\\r", as the csv reader counts them, inside quoted fields too."""
    return text.count("\n") + text.count("\r") - text.count("\r\n") + 1


def _decode(data: bytes) -> str:
    if not data:
        raise FileRefused("The file is empty.")
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is fine
    except UnicodeDecodeError as error:
        line = _line_at_end_of(data[: error.start].decode("utf-8", errors="replace"))
        raise FileRefused(
            f"The file is not UTF-8 text (line {line} has a byte UTF-8 does not allow). "
            "Save it as “CSV UTF-8” and upload it again."
        ) from error


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line the record starts on, fields) for each non-blank record. A record spans
    several lines when a quoted field holds line breaks: the reader's count after the
    previous record is where this one starts."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise FileRefused(f"Line {line} is not valid CSV: {error}.") from error
        if fields:
            yield line, fields


def _check_header(header: list[str], optional: tuple[str, ...] = ()) -> list[str]:
    names = [name.strip().lower() for name in header]
    missing = [name for name in COLUMNS if name not in names]
    extra = [name for name in names if name not in COLUMNS + optional]
    repeated = sorted({name for name in names if names.count(name) > 1})
    expected = f"The first line must name the columns {', '.join(COLUMNS)}."
    if missing:
        raise FileRefused(f"The file has no {', '.join(missing)} column{'s' if len(missing) > 1 else ''}. {expected}")
    if extra:
        raise FileRefused(f"The file has unknown columns: {', '.join(extra)}. {expected}")
    if repeated:
        raise FileRefused(f"The file names the {', '.join(repeated)} column more than once. {expected}")
    return names


def _text(value: str, column: str, limit: int, problems: list[str], *, required: bool) -> str:
    value = restore(value).strip()
    if "\x00" in value:
        problems.append(f"{column} contains a NUL character")
    if required and not value:
        problems.append(f"{column} is empty")
    elif len(value) > limit:
        problems.append(f"{column} is longer than {limit} characters")
    return value


def _slug(value: str, column: str, limit: int, problems: list[str]) -> str:
    value = _text(value, column, limit, problems, required=True)
    if value and not _SLUG.match(value):
        problems.append(f"{column} “{value[:40]}” may hold only letters, digits, hyphens and underscores")
    return value


def _price(value: str, problems: list[str]) -> Decimal:
    value = value.strip()
    try:
        price = Decimal(value)
    except InvalidOperation:
        price = None
    if price is None or not price.is_finite():
        problems.append(f"price “{value[:40]}” is not a number" if value else "price is empty")
        return Decimal(0)
    if price < 0:
        problems.append("price is negative")
    elif price >= MAX_PRICE:
        problems.append(f"price is above the largest allowed, {MAX_PRICE - Decimal('0.01')}")
    elif price.as_tuple().exponent < -2 and price != price.quantize(Decimal("0.01")):
        problems.append("price has more than two decimal places")
    return price.quantize(Decimal("0.01")) if not problems else Decimal(0)


def _stock(value: str, problems: list[str]) -> int:
    value = value.strip()
    if not value:
        return 0
    if value.startswith("-") and _WHOLE_NUMBER.match(value[1:]):
        problems.append("stock is negative")
    elif not _WHOLE_NUMBER.match(value):
        problems.append(f"stock “{value[:40]}” is not a whole number")
    elif int(value) > MAX_STOCK:
        problems.append(f"stock is above the largest allowed, {MAX_STOCK}")
    else:
        return int(value)
    return 0


def _picture_name(value: str, pictures: frozenset[str], problems: list[str]) -> str:
    value = value.strip()
    if value and value not in pictures:
        problems.append(f"image “{value[:80]}” is not in the zip archive")
    return value


def check_file(data: bytes, optional: tuple[str, ...] = ()) -> None:
    """The checks of the whole file, cheap enough for the upload request (the import form
    refuses such a file with a 400 at once): UTF-8 text, a first line naming the columns.
    Raises ``FileRefused``. Each row is checked by ``parse``, in the job."""
    try:
        _, header = next(_records(_decode(data)))
    except StopIteration:
        raise FileRefused("The file has no lines with content.") from None
    _check_header(header, optional)


def parse(data: bytes, report: Report | None = None, pictures: frozenset[str] | None = None) -> list[ProductRow]:
    """Every row of the file, checked; raises ``FileRefused`` if any row (or the file) is bad.

    ``pictures``: the names of the pictures beside the CSV in a zip archive; with it the
    optional ``image`` and ``image_alt`` columns are allowed and checked against it."""
    text = _decode(data)
    total_lines = _line_at_end_of(text)
    records = _records(text)
    try:
        _, header = next(records)
    except StopIteration:
        raise FileRefused("The file has no lines with content.") from None
    names = _check_header(header, PICTURE_COLUMNS if pictures is not None else ())

    rows: list[ProductRow] = []
    bad_rows: list[dict] = []
    bad_row_count = 0
    first_line_of_slug: dict[str, int] = {}
    for number, (line, fields) in enumerate(records, start=1):
        if report is not None and number % BATCH == 0:
            report(line, total_lines)
        problems: list[str] = []
        if len(fields) != len(names):
            problems.append(f"has {len(fields)} fields; the header has {len(names)}")
        else:
            values = dict(zip(names, fields, strict=True))
            row = ProductRow(
                line=line,
                name=_text(values["name"], "name", MAX_NAME, problems, required=True),
                slug=_slug(values["slug"], "slug", MAX_SLUG, problems),
                category=_slug(values["category"], "category", MAX_CATEGORY_SLUG, problems),
                price=_price(values["price"], problems),
                stock=_stock(values["stock"], problems),
                description=_text(values["description"], "description", MAX_DESCRIPTION, problems, required=False),
                image=_picture_name(values.get("image", ""), pictures or frozenset(), problems),
                image_alt=_text(values.get("image_alt", ""), "image_alt", MAX_ALT, problems, required=False),
            )
            if row.image and not row.image_alt:
                problems.append("image_alt is empty: say what the picture shows")
            if row.slug and row.slug in first_line_of_slug:
                problems.append(f"slug “{row.slug}” is already used on line {first_line_of_slug[row.slug]}")
            elif row.slug:
                first_line_of_slug[row.slug] = line
        if problems:
            bad_row_count += 1
            if len(bad_rows) < MAX_LISTED_ERRORS:
                bad_rows.append({"line": line, "reason": "; ".join(problems)})
        else:
            rows.append(row)

    if bad_row_count:
        plural = "s are" if bad_row_count > 1 else " is"
        raise FileRefused(
            f"{bad_row_count} row{plural} not valid, so nothing was imported. Fix the rows listed and upload again.",
            bad_rows=bad_rows,
            bad_row_count=bad_row_count,
        )
    if not rows:
        raise FileRefused("The file has a header but no products.")
    return rows


# ----------------------------------------------------------------------------- writing


def _categories(slugs: set[str]) -> tuple[dict[str, Category], int]:
    """The categories by slug, creating the missing ones (through catalog.services)."""
    found = Category.objects.in_bulk(sorted(slugs), field_name="slug")
    created = 0
    for slug in sorted(slugs - found.keys()):
        name = slug.replace("-", " ").replace("_", " ").strip().capitalize()[:MAX_CATEGORY_NAME] or slug
        try:
            # create_category is atomic: a savepoint, so losing a race to the unique slug is survivable.
            found[slug] = catalog_services.create_category(name=name, slug=slug)
            created += 1
        except IntegrityError:
            found[slug] = Category.objects.get(slug=slug)
    return found, created


def import_rows(rows: list[ProductRow], report: Report | None = None) -> dict[str, int]:
    """Create or update one product per row. Call inside a transaction: all rows or none.

    Products are upserted in batches (``INSERT ... ON CONFLICT (slug) DO UPDATE``)
    rather than row by row through ``catalog.services``: one save per row would run
    the per-object signals, which flush and enqueue one page rebuild per product. The
    pages of updated products are flushed here instead, once, on commit; new products
    have no cached page yet, and the list pages follow the table's version
    (``scaling.cache``).
    """
    categories, categories_created = _categories({row.category for row in rows})
    created = updated = 0
    updated_slugs: list[str] = []
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        existing = set(Product.objects.filter(slug__in=[row.slug for row in batch]).values_list("slug", flat=True))
        Product.objects.bulk_create(
            [
                Product(
                    category=categories[row.category],
                    name=row.name,
                    slug=row.slug,
                    price=row.price,
                    stock=row.stock,
                    description=row.description,
                )
                for row in batch
            ],
            update_conflicts=True,
            unique_fields=["slug"],
            update_fields=["category", "name", "price", "stock", "description", "updated_at"],
        )
        updated_slugs += existing
        updated += len(existing)
        created += len(batch) - len(existing)
        if report is not None:
            report(start + len(batch), len(rows))
    catalog_cache.flush_product_pages(updated_slugs)
    return {"rows": len(rows), "created": created, "updated": updated, "categories_created": categories_created}


def export_csv(report: Report | None = None, chunk: int = 2000) -> tuple[bytes, int]:
    """Every product as CSV bytes, read in keyset pages by id; returns (bytes, count)."""
    output = io.StringIO()
    # The default "\r\n" terminator also makes the writer quote a lone "\r" inside a field,
    # which a reader would otherwise take for the end of the record.
    csv.writer(output).writerow(COLUMNS)
    # Every text cell quoted, as OWASP also asks: a separator or quote inside one cannot
    # split it and put a formula at the start of a cell of its own. Numbers bare.
    writer = csv.writer(output, quoting=csv.QUOTE_NONNUMERIC)
    highest = Product.objects.order_by("-id").values_list("id", flat=True).first() or 0
    last_id, count = 0, 0
    while True:
        page = list(
            Product.objects.filter(id__gt=last_id)
            .order_by("id")
            .values_list("id", "name", "slug", "category__slug", "price", "stock", "description")[:chunk]
        )
        if not page:
            break
        for _, name, slug, category, price, stock, description in page:
            writer.writerow(
                (neutralise(name), neutralise(slug), neutralise(category), price, stock, neutralise(description))
            )
        count += len(page)
        last_id = page[-1][0]
        if report is not None:
            report(min(last_id, highest), highest)
    return output.getvalue().encode(), count


def add_pictures(rows: list[ProductRow], image_files: dict) -> int:
    """Give each row's product its picture (``image_files``: picture name -> ``ImageFile``),
    unless it shows that file already: importing twice adds it once. Call inside the
    import's transaction; the products' pages are flushed once, on commit."""
    wanted = {row.slug: row for row in rows if row.image}
    if not wanted:
        return 0
    products = dict(Product.objects.filter(slug__in=wanted).values_list("slug", "id"))
    shown = set(ProductImage.objects.filter(product_id__in=products.values()).values_list("product_id", "image_id"))
    next_position = dict(
        ProductImage.objects.filter(product_id__in=products.values())
        .values("product_id")
        .annotate(last=Max("position"))
        .values_list("product_id", "last")
    )
    added = [
        ProductImage(
            product_id=products[slug],
            image=image_files[row.image],
            alt=row.image_alt,
            position=next_position.get(products[slug], -1) + 1,
        )
        for slug, row in wanted.items()
        if (products[slug], image_files[row.image].pk) not in shown
    ]
    # One INSERT, not a save (and a page flush and rebuild) per product.
    ProductImage.objects.bulk_create(added, batch_size=BATCH)
    catalog_cache.flush_product_pages(wanted)
    return len(added)
