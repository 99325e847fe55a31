"""Writes of the catalog app. Each is one transaction: all of it happens or none.

The rating summary (``Product.rating_count`` / ``rating_sum``) is kept right here and
only here: every function that adds, changes or removes a review adjusts the summary in
the same transaction, with ``F()`` arithmetic so concurrent writers never overwrite each
other's counts, and with the review row locked so two edits of one review cannot both
subtract its old rating.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from catalog import images
from catalog.models import MAX_RATING, MIN_RATING, Category, ImageFile, Product, ProductImage, Review
from catalog.tasks import prepare_image

logger = logging.getLogger(__name__)


def _check_rating(rating: int) -> None:
    # The form already refuses these; this guards the summary against other callers.
    if isinstance(rating, bool) or not isinstance(rating, int) or not MIN_RATING <= rating <= MAX_RATING:
        raise ValueError(f"A rating is a whole number from {MIN_RATING} to {MAX_RATING}, not {rating!r}.")


def _adjust_summary(product_id: int, *, count: int, total: int) -> None:
    Product.objects.filter(pk=product_id).update(
        rating_count=F("rating_count") + count, rating_sum=F("rating_sum") + total
    )


def _replace(review: Review, *, rating: int, text: str, created_at=None) -> Review:
    """Overwrite a review already locked by the caller; the summary moves by the difference."""
    old_rating = review.rating
    review.rating, review.text = rating, text
    fields = ["rating", "text"]
    if created_at is not None:
        review.created_at = created_at
        fields.append("created_at")
    review.save(update_fields=fields)
    if rating != old_rating:
        _adjust_summary(review.product_id, count=0, total=rating - old_rating)
    return review


@transaction.atomic
def post_review(*, user: AbstractBaseUser, product: Product, rating: int, text: str) -> Review:
    """The user's review of the product: created, or replacing (and re-dated) their earlier one."""
    _check_rating(rating)
    review = Review.objects.select_for_update().filter(product_id=product.pk, user_id=user.pk).first()
    if review is None:
        try:
            # A savepoint: if the same user's concurrent first review wins the race to
            # the unique index, this one falls back to replacing it.
            with transaction.atomic():
                review = Review.objects.create(product_id=product.pk, user_id=user.pk, rating=rating, text=text)
        except IntegrityError:
            review = Review.objects.select_for_update().get(product_id=product.pk, user_id=user.pk)
        else:
            _adjust_summary(product.pk, count=1, total=rating)
            return review
    return _replace(review, rating=rating, text=text, created_at=timezone.now())


@transaction.atomic
def edit_review(review: Review, *, rating: int, text: str) -> Review:
    """Change a review's rating and text in place (moderation): it keeps its date."""
    _check_rating(rating)
    locked = Review.objects.select_for_update().get(pk=review.pk)
    return _replace(locked, rating=rating, text=text)


@transaction.atomic
def delete_review(review: Review) -> None:
    """Remove the review and take it out of the summary; a review already gone is a no-op."""
    # The locked row's rating, not the caller's copy: it may be older than the database.
    locked = Review.objects.select_for_update().filter(pk=review.pk).first()
    if locked is None:
        return
    locked.delete()
    _adjust_summary(locked.product_id, count=-1, total=-locked.rating)


@transaction.atomic
def delete_reviews_of_user(user: AbstractBaseUser) -> int:
    """Remove every review by the user (before the user is deleted); returns how many."""
    reviews = list(Review.objects.select_for_update().filter(user_id=user.pk).order_by("product_id"))
    for review in reviews:  # in product order, so concurrent callers lock products in one order
        review.delete()
        _adjust_summary(review.product_id, count=-1, total=-review.rating)
    return len(reviews)


@transaction.atomic
def create_category(*, name: str, slug: str, description: str = "") -> Category:
    return Category.objects.create(name=name, slug=slug, description=description)


@transaction.atomic
def create_product(
    *, category: Category, name: str, slug: str, price: Decimal, stock: int = 0, description: str = ""
) -> Product:
    """A new product with an empty rating summary."""
    return Product.objects.create(
        category=category, name=name, slug=slug, price=price, stock=stock, description=description
    )


@transaction.atomic
def update_product(product: Product, **changes) -> Product:
    """Change a product's own fields; the rating summary belongs to the review writes."""
    forbidden = {"rating_count", "rating_sum", "id", "pk"} & changes.keys()
    if forbidden:
        raise ValueError(f"update_product cannot change {', '.join(sorted(forbidden))}.")
    for field, value in changes.items():
        setattr(product, field, value)
    product.save(update_fields=[*changes, "updated_at"])
    return product


@transaction.atomic
def image_file_for(checked: images.CheckedUpload) -> ImageFile:
    """The stored picture of this upload: its original stored now if new, without metadata
    (``images.public_original``), and its sizes prepared by a job sent on commit (once: a
    picture uploaded twice is one ``ImageFile``)."""
    checked = images.public_original(checked)
    name = images.original_name(checked)
    image_file = ImageFile.objects.filter(original=name).first()
    if image_file is None:
        images.save_if_absent(name, checked.data)
        image_file, _ = ImageFile.objects.get_or_create(
            original=name, defaults={"width": checked.width, "height": checked.height}
        )
    if image_file.prepared_at is None:
        image_file_id = image_file.pk
        transaction.on_commit(lambda: _send_prepare(image_file_id))
    return image_file


def _send_prepare(image_file_id: int) -> None:
    try:
        prepare_image.send(image_file_id)
    except Exception:
        # Pages show the original meanwhile; ``manage.py prepare_images`` sends it again.
        logger.exception("could not enqueue the preparation of image %d", image_file_id)


@transaction.atomic
def add_product_image(*, product: Product, checked: images.CheckedUpload, alt: str, position: int = 0) -> ProductImage:
    """A picture of the product (``alt`` says what it shows)."""
    if not alt.strip():
        raise ValueError("A product image needs its alt text.")
    return ProductImage.objects.create(product=product, image=image_file_for(checked), alt=alt, position=position)
