"""``manage.py seed_catalog --products N``: demo catalog data, loaded fast with COPY.

Guarantees:

- it adds to whatever catalog exists (categories and reviewers are reused by slug and
  username; new products get ids above every existing one and slugs suffixed with it);
- every seeded product's ``rating_count``/``rating_sum`` equal the COUNT/SUM of its
  seeded reviews, as if each review had gone through ``catalog.services``;
- all of it happens in one transaction on the primary, or none of it;
- memory stays bounded however many products are asked for: rows are streamed to COPY;
- every seeded product has one picture, drawn by ``draw_picture``: a set of at most
  ``PICTURES`` (one per ``PRODUCTS_PER_PICTURE`` products) drawn and prepared once, its
  files content-addressed, so a later seed reuses them; products share them by rows.
  Reviews are drawn from a random generator re-seeded every ``BLOCK`` products, so the
  product pass (which needs each product's summary) and the review pass (which writes
  the rows) draw the very same reviews without keeping them.
"""

from __future__ import annotations

import datetime
import io
import math
import random
import time
from collections.abc import Callable, Iterator

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError, OutputWrapper
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone
from django.utils.text import slugify
from PIL import Image, ImageDraw

from accounts.models import Profile
from catalog import images
from catalog.models import Category, ImageFile, Product, ProductImage, Review

DB = DEFAULT_DB_ALIAS  # writes belong on the primary, whatever the router would pick
BLOCK = 1000
REVIEWER_PREFIX = "seed-reviewer-"
MAX_REVIEWS_PER_PRODUCT = 200
ADVISORY_LOCK = 0x6865726463617431  # one seeder at a time: "herdcat1"
PICTURES = 24
PRODUCTS_PER_PICTURE = 1000
PICTURE_SIZE = (1200, 900)
# (name, background, shapes): the pictures' palettes, named for their alt text.
PALETTES = [
    ("teal on sand", (232, 220, 196), [(0, 128, 128), (32, 96, 112), (96, 176, 160)]),
    ("red on cream", (248, 240, 222), [(192, 48, 48), (144, 32, 40), (224, 112, 80)]),
    ("blue on white", (246, 248, 250), [(40, 80, 160), (72, 128, 200), (24, 48, 104)]),
    ("green on grey", (220, 222, 218), [(56, 128, 72), (104, 160, 88), (32, 88, 56)]),
    ("orange on navy", (28, 36, 64), [(240, 144, 48), (248, 192, 96), (216, 96, 40)]),
    ("purple on mint", (214, 240, 226), [(112, 64, 144), (160, 104, 184), (72, 40, 104)]),
]
SHAPES = ["circles", "squares", "stripes", "triangles"]

DEPARTMENTS = [
    "Books", "Music", "Films", "Games", "Toys", "Garden", "Kitchen", "Bathroom", "Bedroom", "Office",
    "Lighting", "Tools", "Paint", "Bicycles", "Camping", "Fitness", "Running", "Swimming", "Shoes", "Bags",
    "Watches", "Jewellery", "Beauty", "Baby", "Pets", "Food", "Drinks", "Tea", "Coffee", "Stationery",
    "Art Supplies", "Crafts", "Computers", "Phones", "Cameras", "Audio", "Television", "Cars", "Travel", "Furniture",
]  # fmt: skip
ADJECTIVES = [
    "Sturdy", "Compact", "Classic", "Modern", "Rustic", "Deluxe", "Portable", "Elegant", "Handmade", "Vintage",
    "Ergonomic", "Lightweight", "Heavy-duty", "Minimal", "Bright", "Quiet", "Smart", "Foldable", "Cosy", "Rugged",
]  # fmt: skip
MATERIALS = [
    "Oak", "Walnut", "Bamboo", "Steel", "Copper", "Brass", "Cotton", "Linen", "Wool", "Leather",
    "Ceramic", "Glass", "Marble", "Granite", "Cork", "Silicone", "Titanium", "Aluminium", "Felt", "Canvas",
]  # fmt: skip
NOUNS = [
    "Lamp", "Chair", "Table", "Kettle", "Backpack", "Notebook", "Speaker", "Headphones", "Clock", "Mug",
    "Blanket", "Shelf", "Pan", "Knife", "Tent", "Jacket", "Wallet", "Bottle", "Helmet", "Keyboard",
    "Vase", "Rug", "Mirror", "Basket", "Planter", "Tray", "Stool", "Desk", "Umbrella", "Scarf",
]  # fmt: skip
FIRST_NAMES = ["Ana", "Ben", "Chloé", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena", "Mo", "Nia"]
REVIEW_TEXTS = [
    "Exactly as described.", "Good value for the price.", "Arrived quickly and well packed.",
    "Does the job, nothing more.", "Better than I expected!", "Would buy again.", "Smaller than it looks.",
    "Broke after a month.", "My second one; still happy.", "", "Solid build, nice finish.", "Not for me.",
]  # fmt: skip
# A plausible skew: mostly 4s and 5s. Indexed by int(random() * 100).
RATING_BAG = [5] * 45 + [4] * 28 + [3] * 12 + [2] * 7 + [1] * 8
TWO_YEARS = 2 * 365 * 24 * 3600

ReviewDraw = tuple[int, int, int, int]  # reviewer index, rating, text index, age in seconds


def generator(key: str) -> random.Random:
    return random.Random(key)  # noqa: S311 (reproducible demo data, not secrets)


def draw_reviews(rng: random.Random, mean: float, reviewers: int) -> list[ReviewDraw]:
    """One product's reviews: a Poisson-distributed count of distinct reviewers."""
    limit, count, product = pow(2.718281828459045, -mean), 0, rng.random()
    while product > limit and count < MAX_REVIEWS_PER_PRODUCT:
        count += 1
        product *= rng.random()
    authors = rng.sample(range(reviewers), min(count, reviewers))
    texts = len(REVIEW_TEXTS)
    return [
        (author, RATING_BAG[int(rng.random() * 100)], int(rng.random() * texts), int(rng.random() * TWO_YEARS))
        for author in authors
    ]


class Progress:
    """A one-line progress bar on stderr, redrawn with ``\\r`` at most once per percent."""

    def __init__(self, stream: OutputWrapper, label: str, total: int) -> None:
        self.stream, self.label, self.total = stream, label, total
        self.started = time.monotonic()
        self.next_at = 0

    def update(self, done: int) -> None:
        if done < self.next_at:
            return
        percent = done * 100 // self.total if self.total else 100
        self.next_at = (percent + 1) * self.total // 100 + 1
        bar = "#" * (percent // 4) + "." * (25 - percent // 4)
        elapsed = time.monotonic() - self.started
        line = f"\r{self.label:<9} [{bar}] {percent:3d}% {done:,}/{self.total:,} {elapsed:6.1f}s"
        self.stream.write(line, ending="")
        self.stream.flush()

    def finish(self) -> None:
        self.next_at = 0
        self.update(self.total)
        self.stream.write("")
        self.stream.flush()


class Command(BaseCommand):
    help = "Add N generated products (with categories, reviewer users and reviews) using PostgreSQL COPY."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--products", type=int, required=True, help="how many products to add")
        parser.add_argument("--categories", type=int, default=40, help="spread products over this many categories")
        parser.add_argument("--reviews-per-product", type=float, default=2.0, help="mean reviews per product")
        parser.add_argument("--reviewers", type=int, default=None, help="reviewer pool size (default: from N)")
        parser.add_argument("--seed", type=int, default=1, help="random seed")

    def handle(self, *args, products: int, categories: int, reviews_per_product: float, seed: int, **options):
        reviewers = options["reviewers"] or min(10_000, max(200, products // 20))
        if products < 0 or categories < 1 or reviewers < 1 or not 0 <= reviews_per_product <= 50:
            raise CommandError(
                "Need --products >= 0, --categories >= 1, --reviewers >= 1 and 0 <= --reviews-per-product <= 50."
            )
        started = time.monotonic()
        connection = connections[DB]
        with transaction.atomic(using=DB):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK])
                # FK checks row by row during COPY, not millions of events queued for COMMIT.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            category_ids = self.ensure_categories(categories)
            reviewer_ids = self.ensure_reviewers(reviewers, seed)
            first_product_id = self.reserve_ids(Product, products)
            plan = SeedPlan(seed, first_product_id, products, category_ids, reviewer_ids, reviews_per_product)
            review_total = self.copy_products(plan, Progress(self.stderr, "products", products))
            pictures = self.ensure_pictures(min(PICTURES, math.ceil(products / PRODUCTS_PER_PICTURE)))
            first_image_id = self.reserve_ids(ProductImage, products if pictures else 0)
            self.copy_product_images(plan, first_image_id, pictures, Progress(self.stderr, "pictures", products))
            first_review_id = self.reserve_ids(Review, review_total)
            self.copy_reviews(plan, first_review_id, Progress(self.stderr, "reviews", review_total))
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")  # Django's default for its foreign keys
        self.analyze()
        self.stdout.write(
            f"seeded {products:,} products (ids {first_product_id}..{first_product_id + products - 1}) "
            f"and {review_total:,} reviews in {len(category_ids)} categories by {len(reviewer_ids):,} reviewers "
            f"in {time.monotonic() - started:.1f}s"
        )

    # --------------------------------------------------------------- reused rows

    def ensure_categories(self, count: int) -> list[int]:
        wanted = {}
        for number in range(count):
            department = DEPARTMENTS[number % len(DEPARTMENTS)]
            name = department if number < len(DEPARTMENTS) else f"{department} {number // len(DEPARTMENTS) + 1}"
            wanted[slugify(name)] = name
        existing = dict(Category.objects.using(DB).filter(slug__in=wanted).values_list("slug", "id"))
        Category.objects.using(DB).bulk_create(
            Category(name=name, slug=slug, description=f"Everything for {name.lower()}.")
            for slug, name in wanted.items()
            if slug not in existing
        )
        ids = dict(Category.objects.using(DB).filter(slug__in=wanted).values_list("slug", "id"))
        return [ids[slug] for slug in wanted]

    def ensure_reviewers(self, count: int, seed: int) -> list[int]:
        User = get_user_model()
        names = [f"{REVIEWER_PREFIX}{number:06d}" for number in range(count)]
        existing = set(User.objects.using(DB).filter(username__in=names).values_list("username", flat=True))
        rng = generator(f"{seed}:reviewers")
        new_users = User.objects.using(DB).bulk_create(
            (
                User(username=name, email=f"{name}@example.com", password=make_password(None))
                for name in names
                if name not in existing
            ),
            batch_size=1000,
        )
        Profile.objects.using(DB).bulk_create(
            (
                Profile(user=user, display_name=f"{rng.choice(FIRST_NAMES)} {chr(65 + rng.randrange(26))}.")
                for user in new_users
            ),
            batch_size=1000,
        )
        return list(User.objects.using(DB).filter(username__in=names).order_by("username").values_list("id", flat=True))

    def reserve_ids(self, model, count: int) -> int:
        """The first of ``count`` ids above every existing one; the sequence moves past them now.

        Moving the sequence first keeps ordinary inserts during the seed out of the range.
        """
        table = connections[DB].ops.quote_name(model._meta.db_table)
        with connections[DB].cursor() as cursor:
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [model._meta.db_table])
            (sequence,) = cursor.fetchone()
            cursor.execute(f"SELECT last_value, is_called FROM {sequence}")  # noqa: S608 (name from the catalog)
            last_value, is_called = cursor.fetchone()
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")  # noqa: S608 (our own table name)
            (max_id,) = cursor.fetchone()
            first = max(max_id, last_value if is_called else last_value - 1) + 1
            if count:
                cursor.execute("SELECT setval(%s, %s)", [sequence, first + count - 1])
        return first

    def ensure_pictures(self, count: int) -> list[tuple[int, str]]:
        """(``ImageFile`` id, alt text) of ``count`` drawn pictures, each prepared once."""
        found = []
        for number in range(count):
            data, alt = draw_picture(number)
            image = Image.open(io.BytesIO(data))
            checked = images.CheckedUpload(data=data, suffix="jpg", width=image.width, height=image.height)
            name = images.original_name(checked)
            image_file = ImageFile.objects.using(DB).filter(original=name).first()
            if image_file is None or image_file.prepared_at is None:
                images.save_if_absent(name, data)
                renditions = images.prepare(data)
                image_file, _ = ImageFile.objects.using(DB).update_or_create(
                    original=name,
                    defaults={"width": checked.width, "height": checked.height},
                    create_defaults={
                        "width": checked.width,
                        "height": checked.height,
                        "renditions": renditions,
                        "prepared_at": timezone.now(),
                    },
                )
                if image_file.prepared_at is None:
                    ImageFile.objects.using(DB).filter(pk=image_file.pk).update(
                        renditions=renditions, prepared_at=timezone.now()
                    )
            found.append((image_file.pk, alt))
        return found

    # --------------------------------------------------------------- COPY

    def copy(self, sql: str, rows: Iterator[tuple]) -> None:
        connection = connections[DB]
        connection.ensure_connection()
        with connection.connection.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)

    def copy_products(self, plan: SeedPlan, progress: Progress) -> int:
        """COPY the products; returns how many reviews they were given."""
        totals = [0]
        self.copy(
            "COPY catalog_product (id, category_id, name, slug, description, price, stock,"
            " rating_count, rating_sum, created_at, updated_at) FROM STDIN",
            plan.product_rows(totals, progress.update),
        )
        progress.finish()
        return totals[0]

    def copy_product_images(
        self, plan: SeedPlan, first_id: int, pictures: list[tuple[int, str]], progress: Progress
    ) -> None:
        if not pictures:
            return
        rows = (
            (first_id + offset, product_id, *pictures[product_id % len(pictures)], 0)
            for offset, product_id in enumerate(range(plan.first_id, plan.first_id + plan.count))
        )

        def reported(rows):
            for done, row in enumerate(rows, start=1):
                yield row
                progress.update(done)

        self.copy("COPY catalog_productimage (id, product_id, image_id, alt, position) FROM STDIN", reported(rows))
        progress.finish()

    def copy_reviews(self, plan: SeedPlan, first_id: int, progress: Progress) -> None:
        self.copy(
            "COPY catalog_review (id, product_id, user_id, rating, text, created_at) FROM STDIN",
            plan.review_rows(first_id, progress.update),
        )
        progress.finish()

    def analyze(self) -> None:
        models = (Category, Product, ProductImage, Review, get_user_model(), Profile)
        tables = [model._meta.db_table for model in models]
        with connections[DB].cursor() as cursor:
            cursor.execute("ANALYZE " + ", ".join(connections[DB].ops.quote_name(t) for t in tables))


def draw_picture(number: int) -> tuple[bytes, str]:
    """Demo picture ``number`` as JPEG bytes (the same bytes every time) and its alt text."""
    palette, background, colours = PALETTES[number % len(PALETTES)]
    shape = SHAPES[number // len(PALETTES) % len(SHAPES)]
    rng = generator(f"picture:{number}")
    width, height = PICTURE_SIZE
    image = Image.new("RGB", PICTURE_SIZE, background)
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x, y, size = rng.randrange(width), rng.randrange(height), rng.randrange(80, 360)
        colour = rng.choice(colours)
        if shape == "circles":
            draw.ellipse((x - size // 2, y - size // 2, x + size // 2, y + size // 2), fill=colour)
        elif shape == "squares":
            draw.rectangle((x - size // 2, y - size // 2, x + size // 2, y + size // 2), fill=colour)
        elif shape == "stripes":
            draw.rectangle((x, 0, x + size // 4, height), fill=colour)
        else:
            half = size // 2
            draw.polygon([(x, y - half), (x - half, y + half), (x + half, y + half)], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue(), f"A pattern of {shape}, {palette}"


class SeedPlan:
    """The generated rows, reproducible from the seed; never more than one block held at once."""

    def __init__(self, seed, first_id, count, category_ids, reviewer_ids, reviews_per_product) -> None:
        self.seed, self.first_id, self.count = seed, first_id, count
        self.category_ids, self.reviewer_ids, self.mean = category_ids, reviewer_ids, reviews_per_product
        self.now = timezone.now()

    def reviews(self) -> Iterator[tuple[int, list[ReviewDraw]]]:
        """(product id, its reviews) for every product, drawn identically on every call."""
        reviewers = len(self.reviewer_ids)
        for offset in range(self.count):
            if offset % BLOCK == 0:
                rng = generator(f"{self.seed}:{self.first_id}:reviews:{offset // BLOCK}")
            yield self.first_id + offset, draw_reviews(rng, self.mean, reviewers)

    def product_rows(self, totals: list[int], report: Callable[[int], None]) -> Iterator[tuple]:
        rng = generator(f"{self.seed}:{self.first_id}:products")
        slugs = {word: slugify(word) for word in ADJECTIVES + MATERIALS + NOUNS}
        categories = self.category_ids
        stamp = self.now.isoformat()
        for done, (product_id, reviews) in enumerate(self.reviews(), start=1):
            adjective, material, noun = rng.choice(ADJECTIVES), rng.choice(MATERIALS), rng.choice(NOUNS)
            cents = 199 + int(rng.random() * 99_800)
            stock = 0 if rng.random() < 0.1 else 1 + int(rng.random() * 500)
            rating_sum = sum(rating for _, rating, _, _ in reviews)
            totals[0] += len(reviews)
            yield (
                product_id,
                categories[int(rng.random() * len(categories))],
                f"{adjective} {material} {noun}",
                f"{slugs[adjective]}-{slugs[material]}-{slugs[noun]}-{product_id}",
                f"A {adjective.lower()} {noun.lower()} made of {material.lower()}.",
                f"{cents // 100}.{cents % 100:02d}",
                stock,
                len(reviews),
                rating_sum,
                stamp,
                stamp,
            )
            report(done)

    def review_rows(self, first_id: int, report: Callable[[int], None]) -> Iterator[tuple]:
        review_id = first_id
        now = self.now
        for product_id, reviews in self.reviews():
            for author, rating, text, age in reviews:
                yield (
                    review_id,
                    product_id,
                    self.reviewer_ids[author],
                    rating,
                    REVIEW_TEXTS[text],
                    now - datetime.timedelta(seconds=age),
                )
                review_id += 1
                report(review_id - first_id)
