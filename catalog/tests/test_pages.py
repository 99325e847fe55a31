"""Catalog pages through Django's test client: lists, the product page and the review form."""

import pickle

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from catalog import selectors, services
from catalog.models import Review

pytestmark = pytest.mark.django_db


def test_the_index_links_each_category_and_all_products(client, make_category):
    make_category("Lamps")
    make_category("Chairs")
    page = client.get("/").content.decode()
    assert "Lamps" in page and "Chairs" in page
    assert 'href="/products/"' in page


def test_a_category_page_lists_only_its_products(client, make_category, make_product):
    lamps, chairs = make_category("Lamps"), make_category("Chairs")
    make_product("Brass Lamp", in_category=lamps)
    make_product("Oak Chair", in_category=chairs)
    page = client.get(f"/c/{lamps.slug}/").content.decode()
    assert "Brass Lamp" in page and "Oak Chair" not in page
    assert client.get("/c/no-such-category/").status_code == 404


def test_following_next_page_links_visits_every_product_once(client, make_product):
    made = {make_product(f"Thing {n}", price=f"{n % 3}.00").slug for n in range(30)}
    seen, url = [], "/products/?sort=price&in_stock=on"
    while url:
        response = client.get(url)
        assert response.status_code == 200
        seen += [card.slug for card in response.context["page"].products]
        cursor = response.context["page"].next_cursor
        url = f"/products/?sort=price&in_stock=on&after={cursor}" if cursor else None
        if cursor:
            assert f"after={cursor}" in response.content.decode()
    assert sorted(seen) == sorted(made)


def test_a_later_page_says_which_it_is_and_links_both_ways(client, make_product):
    for n in range(30):
        make_product(f"Thing {n}")
    first = client.get("/products/?q=thing").content.decode()
    assert '<span aria-current="page">Page 1</span>' in first and "Previous page" not in first
    second_url = first.split('rel="next" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    second = client.get("/products/" + second_url).content.decode()
    assert '<span aria-current="page">Page 2 of 2</span>' in second and 'rel="next"' not in second
    back = second.split('rel="prev" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert back == "/products/?q=thing"
    assert client.get("/products/?after=x&before=y").status_code == 400


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("min_price=cheap", "Enter a number."),
        ("max_price=-1", "greater than or equal to 0"),
        ("min_price=20&max_price=10", "The minimum price is above the maximum price."),
        ("sort=random", "Sort by one of: newest, price."),
        ("after=garbage", "This page link is damaged."),
        ("sort=price&after=eyJzIjoibmV3ZXN0IiwiayI6WzVdfQ", "belongs to another sort order"),
    ],
)
def test_bad_list_parameters_get_a_400_with_a_clear_message(client, product, query, message):
    response = client.get(f"/products/?{query}")
    assert response.status_code == 400
    assert message in response.content.decode()


def test_the_product_page_shows_details_summary_and_newest_reviews_to_anyone(client, product, alice, make_user):
    for number in range(12):
        services.post_review(user=make_user(f"r{number}"), product=product, rating=4, text=f"review number {number}")
    services.post_review(user=alice, product=product, rating=5, text="The newest one")
    page = client.get(f"/p/{product.slug}/").content.decode()
    assert "Brass Desk Lamp" in page and "49.90" in page
    assert "Rated 4.08 out of 5 by 13 reviewers." in page
    assert "The newest one" in page and "by Alice A." in page
    assert "review number 2" not in page  # only the first page of reviews
    assert "Log in</a> to write a review" in page
    assert client.get("/p/no-such-product/").status_code == 404


def test_a_logged_in_user_sees_the_form_prefilled_with_their_review(client, product, alice):
    services.post_review(user=alice, product=product, rating=2, text="Too dim")
    client.force_login(alice)
    page = client.get(f"/p/{product.slug}/").content.decode()
    assert "Change your review" in page
    assert '<option value="2" selected>' in page


def test_posting_a_review_saves_it_and_redirects_with_a_message(client, product, alice):
    client.force_login(alice)
    response = client.post(f"/p/{product.slug}/review/", {"rating": "5", "text": "Bright!"}, follow=True)
    assert response.redirect_chain == [(f"/p/{product.slug}/", 302)]
    assert "your review is saved" in response.content.decode()
    product.refresh_from_db()
    assert (product.rating_count, product.rating_sum) == (1, 5)


def test_the_review_form_needs_login(client, product):
    response = client.post(f"/p/{product.slug}/review/", {"rating": "5", "text": "anon"})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert not Review.objects.exists()
    assert client.get(f"/p/{product.slug}/review/").status_code == 405


def test_the_review_form_needs_the_csrf_token(product, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(f"/p/{product.slug}/review/", {"rating": "5", "text": "forged"}).status_code == 403
    assert not Review.objects.exists()


@pytest.mark.parametrize("rating", ["0", "6", "x", ""])
def test_a_bad_rating_gets_a_clear_error_and_changes_nothing(client, product, alice, rating):
    services.post_review(user=alice, product=product, rating=3, text="before")
    client.force_login(alice)
    response = client.post(f"/p/{product.slug}/review/", {"rating": rating, "text": "after"})
    assert response.status_code == 400
    assert "Choose a rating from 1 to 5 stars." in response.content.decode()
    assert Review.objects.get().text == "before"
    product.refresh_from_db()
    assert (product.rating_count, product.rating_sum) == (1, 3)


def test_reviewing_an_unknown_product_is_a_404(client, alice):
    client.force_login(alice)
    assert client.post("/p/no-such-product/review/", {"rating": "5", "text": ""}).status_code == 404


def queries_for_product_page(slug: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        data = selectors.product_page(slug)
    return len(captured), data


def test_the_product_page_takes_as_many_queries_with_30_reviews_as_with_1(make_product, make_user):
    one, many = make_product("One"), make_product("Many")
    services.post_review(user=make_user(), product=one, rating=5, text="")
    for number in range(30):
        # Half the authors have no profile at all: the name falls back to the username.
        user = make_user(display_name=f"Reviewer {number}")
        if number % 2:
            user.profile.delete()
        services.post_review(user=user, product=many, rating=1 + number % 5, text=str(number))
    queries_one, _ = queries_for_product_page(one.slug)
    queries_many, data = queries_for_product_page(many.slug)
    assert queries_one == queries_many == 2
    assert len(data.reviews) == selectors.PRODUCT_PAGE_REVIEWS
    assert [review.text for review in data.reviews] == [str(n) for n in range(29, 19, -1)]
    assert data.reviews[0].author.startswith("user")  # 29 is odd: no profile
    assert data.reviews[1].author == "Reviewer 28"


def test_product_page_data_survives_pickling(product, alice):
    services.post_review(user=alice, product=product, rating=4, text="ok")
    data = selectors.product_page(product.slug)
    assert pickle.loads(pickle.dumps(data)) == data  # noqa: S301 (our own bytes)
