"""Accounts pages on the real PostgreSQL and Redis, through Django's test client."""

import functools
import io

import pytest
from django.contrib.auth import SESSION_KEY
from django.core import mail
from django.test import Client

from accounts import services
from accounts.models import Profile
from accounts.tests.factories import PASSWORD
from accounts.tests.test_pictures import encode, noise, one_colour_png, phone_jpeg, png_bomb
from scaling.models import StoredFile

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clear_login_throttles")]


def log_in(client: Client, username: str, password: str = PASSWORD):
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_signing_up_creates_the_user_and_profile_and_logs_in(client):
    response = client.post(
        "/accounts/signup/",
        {"username": "carol", "email": "carol@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    profile = Profile.objects.get(user__username="carol")
    assert client.session[SESSION_KEY] == str(profile.user.pk)


def test_logging_in_rotates_the_session_key_and_sets_a_safe_cookie(client, alice):
    client.get("/accounts/login/")
    client.session["before"] = True
    before = client.session.session_key
    response = log_in(client, "alice")
    assert response.status_code == 302
    assert client.session.session_key != before
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"


def test_logging_out_ends_the_session(client, alice):
    log_in(client, "alice")
    client.post("/accounts/logout/")
    assert client.get("/accounts/profile/").status_code == 302


def test_the_profile_page_is_never_stored_by_a_shared_cache(client, alice):
    log_in(client, "alice")
    response = client.get("/accounts/profile/")
    assert response.status_code == 200
    assert "private" in response["Cache-Control"]
    assert "no-store" in response["Cache-Control"]
    assert "Cookie" in response["Vary"]


def test_a_page_that_did_not_say_otherwise_is_private(client):
    assert client.get("/no-such-page/").headers["Cache-Control"] == "private, no-cache"


def test_each_user_sees_and_edits_only_their_own_profile(client, alice, bob):
    services.update_profile(alice, display_name="Alice A.", bio="alice's secret bio")
    log_in(client, "bob")
    page = client.get("/accounts/profile/").content.decode()
    assert "alice" not in page.lower()
    client.post("/accounts/profile/", {"display_name": "Bob B.", "bio": "mine"})
    alice.profile.refresh_from_db()
    assert (alice.profile.display_name, alice.profile.bio) == ("Alice A.", "alice's secret bio")
    assert Profile.objects.get(user=bob).display_name == "Bob B."


def test_a_forged_session_cookie_is_just_an_anonymous_visitor(client, alice):
    client.cookies["sessionid"] = "forgedforgedforgedforgedforged12"
    response = client.get("/accounts/profile/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/accounts/login/", {"username": "alice", "password": PASSWORD}),
        (
            "/accounts/signup/",
            {"username": "x", "email": "x@example.com", "password1": PASSWORD, "password2": PASSWORD},
        ),
        ("/accounts/profile/", {"display_name": "Mallory", "bio": ""}),
        (
            "/accounts/password/change/",
            {"old_password": PASSWORD, "new_password1": "n3w-pass-word!", "new_password2": "n3w-pass-word!"},
        ),
        ("/accounts/password/reset/", {"email": "alice@example.com"}),
        ("/accounts/logout/", {}),
    ],
)
def test_every_form_refuses_a_post_without_the_csrf_token(alice, path, data):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(path, data)
    assert response.status_code == 403
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)
    assert Profile.objects.get(user=alice).display_name == ""
    assert len(mail.outbox) == 0


def test_changing_the_password_keeps_the_user_logged_in(client, alice):
    log_in(client, "alice")
    response = client.post(
        "/accounts/password/change/",
        {"old_password": PASSWORD, "new_password1": "n3w-pass-word!", "new_password2": "n3w-pass-word!"},
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("n3w-pass-word!")
    assert client.get("/accounts/profile/").status_code == 200


def test_a_password_reset_link_by_email_sets_a_new_password(client, alice):
    client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert len(mail.outbox) == 1
    link = next(line for line in mail.outbox[0].body.splitlines() if "/accounts/password/reset/" in line)
    path = link.split("testserver", 1)[1]
    form = client.get(path, follow=True)
    assert form.status_code == 200
    done = client.post(
        form.redirect_chain[-1][0], {"new_password1": "n3w-pass-word!", "new_password2": "n3w-pass-word!"}
    )
    assert done.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("n3w-pass-word!")


def sign_up(client: Client, username: str, address: str):
    data = {"username": username, "email": f"{username}@example.com", "password1": PASSWORD, "password2": PASSWORD}
    return client.post("/accounts/signup/", data, REMOTE_ADDR=address)


def test_sign_ups_beyond_the_hourly_limit_of_an_address_get_a_429(settings):
    settings.HERD_SIGNUPS_PER_ADDRESS_PER_HOUR = 2
    assert [sign_up(Client(), f"user{n}", "203.0.113.9").status_code for n in range(3)] == [302, 302, 429]
    refused = sign_up(Client(), "user4", "203.0.113.9")
    assert 3500 < int(refused["Retry-After"]) <= 3600
    assert "Too many sign-ups from your address. Try again in 60 minutes." in refused.content.decode()
    assert not Profile.objects.filter(user__username__in=["user2", "user4"]).exists()
    assert sign_up(Client(), "user5", "198.51.100.7").status_code == 302


def test_password_reset_mails_beyond_the_hourly_limit_of_an_address_get_a_429(client, alice, settings):
    settings.HERD_PASSWORD_RESETS_PER_ADDRESS_PER_HOUR = 2
    statuses = [
        client.post("/accounts/password/reset/", {"email": "alice@example.com"}, REMOTE_ADDR="203.0.113.9").status_code
        for _ in range(3)
    ]
    assert statuses == [302, 302, 429]
    assert len(mail.outbox) == 2
    other = client.post("/accounts/password/reset/", {"email": "alice@example.com"}, REMOTE_ADDR="198.51.100.7")
    assert other.status_code == 302


def test_a_good_picture_is_stored_by_content_and_shown(client, alice):
    log_in(client, "alice")
    upload = io.BytesIO(phone_jpeg())
    upload.name = "me.jpg"
    assert client.post("/accounts/profile/", {"display_name": "A", "bio": "", "picture": upload}).status_code == 302
    profile = Profile.objects.get(user=alice)
    assert profile.picture.name.startswith("avatars/") and profile.picture.name.endswith(".webp")
    assert StoredFile.objects.filter(name=profile.thumbnail.name).exists()
    served = client.get(profile.picture.url)
    assert served.status_code == 200
    assert served.content == bytes(StoredFile.objects.get(name=profile.picture.name).content)
    assert client.get(profile.picture.url, HTTP_IF_NONE_MATCH=served["ETag"]).status_code == 304


BAD_UPLOADS = [
    "text renamed png",
    "20 MB image",
    "30000x30000 png bomb",
    "6300x6300 one-colour png",
    "svg",
    "empty",
    "truncated jpeg",
    "gif",
]


@functools.cache
def bad_uploads() -> dict[str, tuple[bytes, str, str]]:
    big = io.BytesIO()
    noise(2600, 2600).save(big, "PNG")
    assert big.tell() > 19 * 1024 * 1024
    jpeg = phone_jpeg()
    cases = {
        "text renamed png": (b"just some text, not a picture\n" * 10, "photo.png", "not a JPEG, PNG or WebP"),
        "20 MB image": (big.getvalue(), "huge.png", "the limit is 5 MB"),
        "30000x30000 png bomb": (png_bomb(30000, 30000), "bomb.png", "the limit is 16 megapixels"),
        "6300x6300 one-colour png": (one_colour_png(6300, 6300), "big.png", "the limit is 16 megapixels"),
        "svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "x.svg", "not a JPEG"),
        "empty": (b"", "empty.jpg", "The submitted file is empty."),
        "truncated jpeg": (jpeg[: len(jpeg) // 2], "cut.jpg", "damaged or incomplete"),
        "gif": (encode(noise(20, 20).convert("P"), "GIF"), "a.gif", "not a JPEG"),
    }
    assert list(cases) == BAD_UPLOADS
    return cases


@pytest.mark.parametrize("case", BAD_UPLOADS)
def test_a_bad_picture_gets_a_clear_error_and_changes_nothing(client, alice, case):
    services.update_profile(alice, display_name="Before", bio="unchanged")
    data, name, message = bad_uploads()[case]
    upload = io.BytesIO(data)
    upload.name = name
    log_in(client, "alice")
    response = client.post("/accounts/profile/", {"display_name": "After", "bio": "changed", "picture": upload})
    assert response.status_code == 400
    assert message in response.content.decode()
    profile = Profile.objects.get(user=alice)
    assert (profile.display_name, profile.bio, profile.picture.name) == ("Before", "unchanged", "")
    assert StoredFile.objects.count() == 0


def test_a_picture_sent_while_every_decode_slot_is_taken_gets_503_and_when_to_retry(client, alice, decode_slots_taken):
    services.update_profile(alice, display_name="Before", bio="unchanged")
    upload = io.BytesIO(encode(noise(64, 48), "PNG"))
    upload.name = "me.png"
    log_in(client, "alice")
    response = client.post("/accounts/profile/", {"display_name": "After", "bio": "changed", "picture": upload})
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "please try again in a few seconds" in response.content.decode()
    profile = Profile.objects.get(user=alice)
    assert (profile.display_name, profile.bio, profile.picture.name) == ("Before", "unchanged", "")
