"""The rating summary on Product stays equal to its reviews through every write path."""

import pytest
from django.contrib.admin.sites import site
from django.db.models import Count, Sum
from django.test import Client

from catalog import services
from catalog.models import Product, Review

pytestmark = pytest.mark.django_db


def summary(product: Product) -> tuple[int, int]:
    product.refresh_from_db()
    return product.rating_count, product.rating_sum


def recomputed(product: Product) -> tuple[int, int]:
    totals = Review.objects.filter(product=product).aggregate(count=Count("id"), total=Sum("rating"))
    return totals["count"], totals["total"] or 0


def test_posting_a_review_adds_it_to_the_summary(product, alice, bob):
    services.post_review(user=alice, product=product, rating=5, text="Lovely")
    services.post_review(user=bob, product=product, rating=2, text="Meh")
    assert summary(product) == (2, 7) == recomputed(product)
    assert product.rating_average == 3.5


def test_a_second_review_by_the_same_user_replaces_the_first(product, alice):
    first = services.post_review(user=alice, product=product, rating=1, text="Bad")
    second = services.post_review(user=alice, product=product, rating=4, text="Grew on me")
    assert second.pk == first.pk
    assert Review.objects.get(pk=first.pk).text == "Grew on me"
    assert summary(product) == (1, 4) == recomputed(product)


def test_deleting_a_review_takes_it_out_of_the_summary(product, alice, bob):
    review = services.post_review(user=alice, product=product, rating=5, text="")
    services.post_review(user=bob, product=product, rating=3, text="")
    services.delete_review(review)
    services.delete_review(review)  # a second delete (e.g. a double click) changes nothing
    assert summary(product) == (1, 3) == recomputed(product)


def test_deleting_with_a_stale_copy_subtracts_the_stored_rating(product, alice):
    stale = services.post_review(user=alice, product=product, rating=2, text="")
    services.post_review(user=alice, product=product, rating=5, text="changed my mind")
    services.delete_review(stale)  # stale.rating is still 2 in memory
    assert summary(product) == (0, 0)
    assert product.rating_average is None


@pytest.mark.parametrize("rating", [0, 6, -1, "5", 4.5, True])
def test_a_rating_outside_1_to_5_is_refused_and_changes_nothing(product, alice, rating):
    with pytest.raises(ValueError, match="from 1 to 5"):
        services.post_review(user=alice, product=product, rating=rating, text="")
    assert summary(product) == (0, 0)
    assert not Review.objects.exists()


def test_deleting_a_user_takes_their_reviews_out_of_the_summaries(make_product, alice, bob):
    lamp, chair = make_product("Lamp"), make_product("Chair")
    for product in (lamp, chair):
        services.post_review(user=alice, product=product, rating=1, text="")
        services.post_review(user=bob, product=product, rating=5, text="")
    alice.delete()
    assert summary(lamp) == (1, 5) == recomputed(lamp)
    assert summary(chair) == (1, 5) == recomputed(chair)


@pytest.fixture
def admin_client(make_user, settings):
    # Admin pages link static files; tests run without collectstatic's manifest.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    staff = make_user("staff")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    return client


def test_the_admin_keeps_the_summary_right_when_adding_editing_and_deleting(admin_client, product, alice, bob):
    added = admin_client.post(
        "/admin/catalog/review/add/", {"product": product.pk, "user": alice.pk, "rating": 4, "text": "ok"}
    )
    assert added.status_code == 302, added.content.decode()
    assert summary(product) == (1, 4)
    review = Review.objects.get(user=alice)
    edited = admin_client.post(f"/admin/catalog/review/{review.pk}/change/", {"rating": 2, "text": "moderated"})
    assert edited.status_code == 302, edited.content.decode()
    assert summary(product) == (1, 2) == recomputed(product)

    services.post_review(user=bob, product=product, rating=5, text="")
    deleted = admin_client.post(f"/admin/catalog/review/{review.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert summary(product) == (1, 5) == recomputed(product)

    bulk = admin_client.post(
        "/admin/catalog/review/",
        {
            "action": "delete_selected",
            "_selected_action": list(Review.objects.values_list("pk", flat=True)),
            "post": "yes",
        },
    )
    assert bulk.status_code == 302
    assert summary(product) == (0, 0) == recomputed(product)


def test_the_admin_shows_the_rating_summary_read_only(admin_client, product):
    page = admin_client.get(f"/admin/catalog/product/{product.pk}/change/").content.decode()
    assert "Maintained by the review write path" in page
    assert 'name="rating_count"' not in page
    assert admin_client.get("/admin/catalog/product/?in_stock=yes").status_code == 200
    assert site.is_registered(Review)
