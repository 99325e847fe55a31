"""The Content-Security-Policy: on every page, strict, and the same bytes under the same
header for every visitor of a page cached whole (no inline script or style anywhere)."""

import re
from decimal import Decimal
from pathlib import Path

import pytest
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from catalog import services as catalog_services
from config.tests.test_settings import manage
from scaling.web.edge import public_when_anonymous

ROOT = Path(settings.BASE_DIR)
TEMPLATES = sorted(p for p in ROOT.glob("**/templates/**/*.html") if not p.relative_to(ROOT).parts[0].startswith("."))
# What a strict policy refuses: inline <style>, style="", <script> without src, onclick="...".
INLINE = re.compile(r"<style\b|\sstyle\s*=|<script\b(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=\s*[\"']", re.IGNORECASE)


def policy(response: HttpResponse) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy")
    assert header, "no Content-Security-Policy header"
    return {name: values for name, *values in (part.split() for part in header.split(";"))}


@pytest.fixture
def product(db):
    category = catalog_services.create_category(name="Lamps", slug="lamps")
    return catalog_services.create_product(
        category=category, name="Brass Desk Lamp", slug="brass-desk-lamp", price=Decimal("49.90"), stock=5
    )


@pytest.mark.django_db
def test_the_policy_allows_only_this_origins_scripts_and_styles_and_no_framing(client):
    directives = policy(client.get("/accounts/login/"))
    for kind in ("script-src", "style-src"):
        assert directives[kind][0] == "'self'"
        assert not {"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "*", "data:"} & set(directives[kind])
    assert directives["default-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'"]
    assert directives["img-src"] == ["'self'", "data:"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'self'"]
    assert directives["form-action"] == ["'self'"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_template_has_an_inline_script_style_or_event_handler(template):
    assert not INLINE.findall(template.read_text()), "move it to a static file (the policy refuses inline code)"


@pytest.mark.django_db
def test_public_pages_are_the_same_bytes_for_everyone_under_a_header_without_a_nonce(client, product):
    pages = ["/", "/products/", "/c/lamps/", "/p/brass-desk-lamp/", "/p/brass-desk-lamp/"]  # the second: served early
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200
        assert "public" in response["Cache-Control"], path
        assert not any("nonce" in value for values in policy(response).values() for value in values), path
        assert not INLINE.findall(response.content.decode()), path


def test_a_page_that_used_a_nonce_is_never_marked_public():
    @public_when_anonymous()
    def page_with_an_inline_script(request: HttpRequest) -> HttpResponse:
        return HttpResponse(f'<script nonce="{request.csp_nonce}">go()</script>')

    request = RequestFactory().get("/")
    middleware = CSPMiddleware(page_with_an_inline_script)
    response = middleware(request)
    assert "private" in response["Cache-Control"]
    assert f"'nonce-{request.csp_nonce}'" in policy(response)["script-src"]


@pytest.mark.parametrize(
    ("env", "origins"),
    [
        ({"S3_CUSTOM_DOMAIN": "media.herd.example"}, ["https://media.herd.example"]),
        ({"S3_ENDPOINT_URL": "https://objects.example.net"}, ["https://objects.example.net"]),
        (
            {"S3_REGION": "eu-west-1"},
            ["https://herd-media.s3.amazonaws.com", "https://herd-media.s3.eu-west-1.amazonaws.com"],
        ),
    ],
)
def test_pictures_from_the_bucket_or_its_cdn_are_allowed(env, origins):
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(*settings.CONTENT_SECURITY_POLICY['DIRECTIVES']['img-src'])",
        S3_BUCKET="herd-media",
        S3_PRIVATE_BUCKET="herd-private",
        S3_ACCESS_KEY_ID="id",
        S3_SECRET_ACCESS_KEY="secret",
        **env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["'self'", "data:", *origins]
