"""``seed_catalog`` loads products and reviews whose summaries match, and adds to what exists."""

import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count, F, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce

from accounts.models import User
from catalog import selectors, services
from catalog.management.commands import seed_catalog
from catalog.models import Category, ImageFile, Product, ProductImage, Review

pytestmark = pytest.mark.django_db


def seed(**options) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("seed_catalog", stdout=out, stderr=err, **options)
    assert "\r" in err.getvalue() and "100%" in err.getvalue()
    return out.getvalue()


def products_whose_summary_is_wrong():
    reviews = Review.objects.filter(product=OuterRef("pk")).values("product")
    return Product.objects.annotate(
        counted=Coalesce(Subquery(reviews.annotate(n=Count("id")).values("n")), 0),
        summed=Coalesce(Subquery(reviews.annotate(s=Sum("rating")).values("s")), 0),
    ).exclude(rating_count=F("counted"), rating_sum=F("summed"))


def test_seeding_loads_products_and_reviews_whose_summaries_match(category):
    output = seed(products=800, categories=5, reviews_per_product=2.5, seed=7)
    assert "seeded 800 products" in output
    assert Product.objects.count() == 800
    assert Category.objects.count() == 6  # the fixture's plus five seeded
    reviews = Review.objects.count()
    assert 1600 < reviews < 2400
    assert not products_whose_summary_is_wrong().exists()
    assert Product.objects.filter(rating_count=0).exists()  # a spread, not a constant
    assert User.objects.filter(username__startswith="seed-reviewer-", profile__isnull=False).count() == 200
    assert not User.objects.get(username="seed-reviewer-000000").has_usable_password()


def test_seeding_twice_adds_more_and_leaves_the_sequences_past_the_seeded_ids():
    seed(products=300, categories=4)
    first_max = Product.objects.order_by("-id").values_list("id", flat=True).first()
    seed(products=300, categories=4)
    assert Product.objects.count() == 600
    assert Category.objects.count() == 4  # reused by slug
    assert User.objects.filter(username__startswith="seed-reviewer-").count() == 200  # reused by username
    assert not products_whose_summary_is_wrong().exists()
    assert Product.objects.filter(id__gt=first_max).count() == 300
    # Ordinary inserts after a seed take ids above it, rather than colliding.
    made = services.create_product(category=Category.objects.first(), name="After", slug="after", price=Decimal("1.00"))
    assert made.pk > Product.objects.exclude(pk=made.pk).order_by("-id").first().pk
    user = User.objects.create_user("late-reviewer")
    review = services.post_review(user=user, product=made, rating=5, text="")
    assert review.pk > Review.objects.exclude(pk=review.pk).order_by("-id").first().pk


def test_seeded_products_page_through_and_show_on_their_page():
    seed(products=120, categories=3, reviews_per_product=4)
    ids, after = [], None
    while True:
        page = selectors.product_list(sort="price", after=after, limit=50)
        ids += [card.id for card in page.products]
        if not (after := page.next_cursor):
            break
    assert sorted(ids) == sorted(Product.objects.values_list("id", flat=True))
    busiest = Product.objects.order_by("-rating_count").first()
    data = selectors.product_page(busiest.slug)
    assert data.rating_count == busiest.rating_count
    assert len(data.reviews) == min(busiest.rating_count, 10)


def test_every_seeded_product_shows_one_of_a_few_shared_pictures_prepared_once(monkeypatch):
    monkeypatch.setattr(seed_catalog, "PRODUCTS_PER_PICTURE", 50)
    seed(products=120, categories=2, reviews_per_product=0)
    assert ImageFile.objects.count() == 3 and not ImageFile.objects.filter(prepared_at=None).exists()
    assert ProductImage.objects.count() == 120 and not Product.objects.filter(images__isnull=True).exists()
    assert ProductImage.objects.values("image").distinct().count() == 3
    (picture,) = selectors.product_page(Product.objects.order_by("id").first().slug).images
    assert picture.sources and picture.alt.startswith("A pattern of")
    # A later seed draws the same pictures: it finds them prepared and shares them.
    seed(products=10, categories=2, reviews_per_product=0)
    assert ImageFile.objects.count() == 3 and ProductImage.objects.count() == 130


def test_bad_options_are_refused():
    with pytest.raises(CommandError):
        call_command("seed_catalog", products=-1, stdout=io.StringIO(), stderr=io.StringIO())


def test_seed_demo_seeds_the_catalog_once(capsys):
    call_command("seed_demo", stdout=io.StringIO())
    assert Product.objects.count() == 2000
    call_command("seed_demo", stdout=io.StringIO())
    assert Product.objects.count() == 2000
    assert "seeded 2,000 products" in capsys.readouterr().out
