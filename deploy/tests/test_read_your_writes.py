"""Read-your-writes across app replicas: what a user wrote through one app replica, their
next request through another reads back, uncached, while the database replica lags.

Uses the herd of deploy/tests/conftest.py (web1..web3 behind HAProxy) and delays the test
replica's replay (``recovery_min_apply_delay``). The reads checked here are not served by
a cache: the user's own review that pre-fills the review form (``selectors.review_of``),
and the user row that the session is checked against. Only the position stored per user
(``scaling.db.consistency``) sends them to the primary; each test also checks that the
database replica really had not replayed the write when it was read back.
"""

import re
from decimal import Decimal

import pytest

from accounts.models import User
from accounts.tests.factories import PASSWORD, make_user
from catalog import services as catalog_services
from catalog.models import Review
from deploy.visitor import Visitor

pytestmark = [
    pytest.mark.herd,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("clear_login_throttles"),
]

REPLICA_DELAY = "5s"  # far longer than a write and the read after it take


@pytest.fixture
def lamp(wait_for_replicas):
    category = catalog_services.create_category(name="Lamps", slug="lamps")
    product = catalog_services.create_product(
        category=category, name="Brass Lamp", slug="brass-lamp", price=Decimal("49.90"), stock=3
    )
    make_user("alice")
    wait_for_replicas()
    return product


@pytest.fixture
def alice_on_web1(herd, lamp):
    """Alice, logged in through web1: (her visitor, web1, web2)."""
    web1, web2, _ = herd.webs()
    visitor = Visitor(herd.profile.url)
    assert visitor.log_in("alice", PASSWORD, port=web1.port).status_code == 302
    return visitor, web1, web2


def csrf_token(page_text: str) -> str:
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page_text)
    assert token, "no CSRF token on the page"
    return token.group(1)


def test_a_review_posted_through_one_replica_fills_the_form_on_the_next_page_through_another(
    alice_on_web1, lamp, replica_delay
):
    visitor, web1, web2 = alice_on_web1
    replica_delay(REPLICA_DELAY)
    page = visitor.get(f"/p/{lamp.slug}/", port=web1.port)
    posted = visitor.client.post(
        visitor.url(f"/p/{lamp.slug}/review/", web1.port),
        data={"csrfmiddlewaretoken": csrf_token(page.text), "rating": 4, "text": "Warm light, heavy base."},
    )
    assert (posted.status_code, posted.headers["X-Served-By"]) == (302, "web1")

    page = visitor.get(f"/p/{lamp.slug}/", port=web2.port)
    assert not Review.objects.using("replica1").filter(product=lamp).exists(), "the replica did not lag"
    assert page.headers["X-Served-By"] == "web2"
    assert "Change your review" in page.text
    assert re.search(r'<textarea name="text"[^>]*>\s*Warm light, heavy base\.</textarea>', page.text)


def test_a_password_changed_through_one_replica_keeps_the_user_logged_in_through_another(alice_on_web1, replica_delay):
    visitor, web1, web2 = alice_on_web1
    old_hash = User.objects.using("default").get(username="alice").password
    replica_delay(REPLICA_DELAY)
    new_password = "another-long-password-43"
    changed = visitor.post_form(
        "/accounts/password/change/",
        {"old_password": PASSWORD, "new_password1": new_password, "new_password2": new_password},
        port=web1.port,
    )
    assert (changed.status_code, changed.headers["X-Served-By"]) == (302, "web1")

    # The session now holds a hash of the new password: checked against the old row, it
    # would not match, and the session would be flushed (logged out for good).
    assert visitor.whoami(port=web2.port) == ("alice", "web2")
    assert User.objects.using("replica1").get(username="alice").password == old_hash, "the replica did not lag"
