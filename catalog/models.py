from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Upper
from django.utils import timezone

from scaling.db.bulk_updates import SignallingQuerySet

MIN_RATING, MAX_RATING = 1, 5


def rating_average(count: int, total: int) -> float | None:
    """The mean rating from the stored summary: None while nobody has rated."""
    return round(total / count, 2) if count else None


class Category(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=140, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SignallingQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    """A thing for sale.

    ``rating_count`` and ``rating_sum`` summarise the product's reviews. They are
    denormalized on purpose: ``catalog.services`` adjusts them in the same transaction
    as every review write, so a read never aggregates reviews.
    """

    # The composite (category, id) index below serves the foreign key too.
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products", db_index=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=220, unique=True)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    stock = models.IntegerField(default=0)
    rating_count = models.IntegerField(default=0)
    rating_sum = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SignallingQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(price__gte=0), name="catalog_product_price_not_negative"),
            models.CheckConstraint(condition=Q(stock__gte=0), name="catalog_product_stock_not_negative"),
            # Every rating is 1..5, so a drifted summary fails loudly instead of showing nonsense.
            models.CheckConstraint(
                condition=Q(rating_count__gte=0)
                & Q(rating_sum__gte=F("rating_count") * MIN_RATING)
                & Q(rating_sum__lte=F("rating_count") * MAX_RATING),
                name="catalog_product_rating_summary_possible",
            ),
        ]
        indexes = [
            # Keyset pagination: each list order has an index that ends in the tiebreaker id.
            models.Index(fields=["category", "id"], name="catalog_product_category_id"),
            models.Index(fields=["price", "id"], name="catalog_product_price_id"),
            models.Index(fields=["category", "price", "id"], name="catalog_product_cat_price_id"),
            # Substring search. Django writes ``name__icontains`` as UPPER(name) LIKE UPPER(%s),
            # so the trigram index is on UPPER(name): an index on plain name would not serve it.
            GinIndex(OpClass(Upper("name"), name="gin_trgm_ops"), name="catalog_product_name_trgm"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def rating_average(self) -> float | None:
        return rating_average(self.rating_count, self.rating_sum)


class Review(models.Model):
    """One user's rating of one product; a user's second review replaces their first."""

    # Served by the (product, user) unique index and the (product, -created_at) index.
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="reviews", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviews")
    rating = models.SmallIntegerField()
    text = models.TextField(max_length=5000, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = SignallingQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "user"], name="catalog_review_one_per_user_and_product"),
            models.CheckConstraint(
                condition=Q(rating__gte=MIN_RATING) & Q(rating__lte=MAX_RATING), name="catalog_review_rating_1_to_5"
            ),
        ]
        indexes = [models.Index(fields=["product", "-created_at", "-id"], name="catalog_review_product_newest")]

    def __str__(self) -> str:
        return f"{self.rating}/5 for {self.product_id} by {self.user_id}"


class ImageFile(models.Model):
    """One uploaded picture, stored once under the SHA-256 of its bytes, and the sizes
    prepared from it (``catalog.images``). Products that show the same picture share it.

    ``renditions`` is empty until the prepare job ran: ``{"avif"|"webp"|"jpeg":
    [[width, height, name], ...]}``, widest last, each name content-addressed too.
    """

    original = models.FileField(max_length=255, unique=True)
    width = models.PositiveIntegerField()  # upright (EXIF orientation applied), in px
    height = models.PositiveIntegerField()
    renditions = models.JSONField(default=dict, blank=True)
    prepared_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SignallingQuerySet.as_manager()

    def __str__(self) -> str:
        return self.original.name


class ProductImage(models.Model):
    """A picture shown on a product's page and (the first one) on its card."""

    # Served by the (product, position, id) index.
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="images", db_index=False)
    image = models.ForeignKey(ImageFile, on_delete=models.PROTECT, related_name="uses")
    position = models.PositiveSmallIntegerField(default=0)
    alt = models.CharField("alt text", max_length=200, help_text="What the picture shows, for those who cannot see it.")

    objects = SignallingQuerySet.as_manager()

    class Meta:
        ordering = ["position", "id"]
        indexes = [models.Index(fields=["product", "position", "id"], name="catalog_productimage_order")]
        constraints = [models.CheckConstraint(condition=~Q(alt=""), name="catalog_productimage_alt_required")]

    def __str__(self) -> str:
        return self.alt
