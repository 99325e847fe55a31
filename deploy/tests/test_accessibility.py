"""Accessibility in a real browser: Debian's Chromium through HAProxy to the herd of
deploy/tests/conftest.py, checked by axe-core against every WCAG 2.0/2.1/2.2 A and AA rule,
light at phone width and dark at desktop width, logged out and logged in. Each page also
fits a 360 px wide phone screen (nothing scrolls sideways).

axe-core comes from npm, pinned with its integrity hash in deploy/tests/axe/package-lock.json
and installed by ``npm ci`` into deploy/tests/axe/node_modules (git-ignored) on first use.
It is evaluated into each page through the DevTools protocol, so the pages keep their
Content-Security-Policy while they are checked.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from accounts import services as accounts_services
from catalog import services as catalog_services
from catalog.models import Product
from deploy.npm import ensure_pinned
from deploy.tests.test_live_jobs import CHROMIUM, CHROMIUM_ARGS, PASSWORD

pytestmark = [
    pytest.mark.herd,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("clear_login_throttles"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"),
]

AXE_DIR = Path(__file__).parent / "axe"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
PHONE = {"width": 360, "height": 740}
# The innermost elements that reach past the right edge of the screen, named.
PAST_THE_EDGE = """
Array.from(document.body.querySelectorAll("*"))
  .filter(function (e) { return e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5; })
  .filter(function (e, i, all) { return !all.some(function (o) { return o !== e && e.contains(o); }); })
  .slice(0, 3)
  .map(function (e) {
    var named = typeof e.className === "string" && e.className;
    var classes = named ? "." + e.className.trim().split(/\\s+/).join(".") : "";
    return e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + classes;
  })
"""
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def axe_source() -> str:
    """axe.min.js of the pinned axe-core, installed with ``npm ci`` when missing or stale."""
    try:
        return (ensure_pinned(AXE_DIR, "axe-core") / "axe.min.js").read_text()
    except RuntimeError as error:
        pytest.fail(str(error))


@pytest.fixture
def shop(wait_for_replicas):
    """A category with two pages of products, some reviewed, one sold out; a staff user."""
    lamps = catalog_services.create_category(name="Lamps", slug="lamps", description="Light for reading.")
    products = [
        catalog_services.create_product(
            category=lamps,
            name=f"Brass Desk Lamp {n}",
            slug=f"brass-desk-lamp-{n}",
            price=Decimal("49.90") + n,
            stock=0 if n == 3 else 5,
            description="A heavy base.\nA warm light.",
        )
        for n in range(30)
    ]
    catalog_services.create_category(name="Chairs", slug="chairs")
    staff = accounts_services.create_user(username="operator", email="operator@example.com", password=PASSWORD)
    staff.is_staff = staff.is_superuser = True
    staff.save()
    for rating, name in ((4, "reader"), (5, "writer")):
        reviewer = accounts_services.create_user(username=name, email=f"{name}@example.com", password=PASSWORD)
        catalog_services.post_review(user=reviewer, product=products[0], rating=rating, text="Bright enough.")
    wait_for_replicas()
    return products, staff


class Audit:
    """One browser page; ``check(path)`` opens it and records what axe and the phone width find."""

    def __init__(self, page: Page, base_url: str, axe_source: str) -> None:
        self.page, self.base_url, self.axe_source = page, base_url.rstrip("/"), axe_source
        self.violations: list[str] = []
        self.too_wide: list[str] = []

    def open(self, path: str, *, status: int = 200) -> None:
        response = self.page.goto(self.base_url + path)
        assert response is not None and response.status == status, f"{path}: {response and response.status}"
        self.page.wait_for_load_state("load")

    def check(self, path: str | None = None, *, status: int = 200, ready: str | None = None) -> None:
        """Open ``path`` (or check the page as it is): at phone width in the light scheme and at
        desktop width in the dark one (the schemes differ in colour only, the widths in layout
        only: each pairing is checked once, which halves the suite's time here)."""
        if path is not None:
            self.open(path, status=status)
        where = self.page.url.removeprefix(self.base_url)
        if ready:
            self.page.wait_for_selector(ready)
        for viewport in (PHONE, DESKTOP):
            self.page.set_viewport_size(viewport)
            if viewport is PHONE:
                scroll_width = self.page.evaluate("document.documentElement.scrollWidth")
                if scroll_width > PHONE["width"]:
                    culprits = ", ".join(self.page.evaluate(PAST_THE_EDGE))
                    self.too_wide.append(f"{where}: {scroll_width} px wide at {PHONE['width']} px ({culprits})")
            scheme = "light" if viewport is PHONE else "dark"
            self.page.emulate_media(color_scheme=scheme)
            self.violations += [f"{where} ({scheme}, {viewport['width']} px): {v}" for v in self.axe()]

    def axe(self) -> list[str]:
        if not self.page.evaluate("typeof window.axe === 'object'"):
            self.page.evaluate(self.axe_source)  # through DevTools: the page's CSP does not apply
        found = self.page.evaluate(
            "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
            WCAG_TAGS,
        )["violations"]
        return [
            f"{v['id']} ({v['impact']}): {v['help']} at {', '.join(' '.join(n['target']) for n in v['nodes'][:5])}"
            for v in found
        ]


def test_the_pages_pass_axe_in_both_colour_schemes_and_fit_a_phone(herd, shop, axe_source):
    products, staff = shop
    product = products[0].slug
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            audit = Audit(browser.new_page(), herd.profile.url, axe_source)
            # Logged out: the catalog, a search with a second page, a product, the log-in form
            # (and with its errors), and the jobs page (which sends a visitor to log in).
            audit.check("/")
            audit.check("/c/lamps/")
            audit.check("/products/?q=lamp")
            audit.page.get_by_role("link", name="Next page").click()
            audit.page.wait_for_url("**after=*")
            audit.check()
            audit.check(f"/p/{product}/")
            audit.check("/products/?min_price=cheap", status=400)
            audit.check("/jobs/")
            assert "/accounts/login/" in audit.page.url
            audit.page.fill("#id_username", staff.username)
            audit.page.fill("#id_password", "not the password")
            audit.page.get_by_role("button", name="Log in").click()
            audit.page.wait_for_selector(".errorlist")
            audit.check()

            audit.open("/accounts/login/")
            audit.page.fill("#id_username", staff.username)
            audit.page.fill("#id_password", PASSWORD)
            audit.page.get_by_role("button", name="Log in").click()
            audit.page.wait_for_url("**/accounts/profile/")
            audit.check()
            audit.check("/")
            audit.check("/c/lamps/")
            audit.check("/products/?q=lamp&sort=price")
            audit.check(f"/p/{product}/")
            audit.check("/jobs/")
            audit.page.get_by_role("button", name="Import", exact=True).click()  # no file: the form's errors
            audit.page.wait_for_selector(".errorlist")
            audit.check()
            audit.check("/notifications/")
            audit.check("/ops/", ready="#ops-requests > *")
        finally:
            browser.close()
    assert Product.objects.count() == len(products)
    assert audit.violations == []
    assert audit.too_wide == []
