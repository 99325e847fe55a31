"""The Content-Security-Policy in a real browser: Debian's Chromium through HAProxy to the
herd of deploy/tests/conftest.py. Every main page, the ops dashboard and the admin work
under the policy: the header is there and the browser reports no violation."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
from playwright.sync_api import Page, sync_playwright

from accounts import services as accounts_services
from catalog import services as catalog_services
from deploy.tests.test_live_jobs import CHROMIUM, CHROMIUM_ARGS, PASSWORD

pytestmark = [
    pytest.mark.herd,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("clear_login_throttles"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"),
]

# Runs before any page script (CDP injects it, so the policy does not apply to it).
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  var where = e.sourceFile + ":" + e.lineNumber;
  window.__violations.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " at " + where);
});
"""

# connect-src 'self' must cover ws: to the same host (CSP3; Chromium does): the page's own socket.
OPEN_SOCKET = """
new Promise(function (resolve) {
  var socket = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws/notifications/");
  socket.onopen = function () { socket.close(); resolve("open"); };
  socket.onerror = function () { resolve("refused"); };
})
"""


@pytest.fixture
def catalog(wait_for_replicas):
    category = catalog_services.create_category(name="Lamps", slug="lamps")
    product = catalog_services.create_product(
        category=category, name="Brass Desk Lamp", slug="brass-desk-lamp", price=Decimal("49.90"), stock=5
    )
    staff = accounts_services.create_user(username="operator", email="operator@example.com", password=PASSWORD)
    staff.is_staff = staff.is_superuser = True
    staff.save()
    wait_for_replicas()
    return product, staff


class Visit:
    """One browser page that remembers every CSP complaint and every page's header."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page, self.base_url = page, base_url.rstrip("/")
        self.complaints: list[str] = []
        self.missing_header: list[str] = []
        page.add_init_script(RECORD_VIOLATIONS)
        page.on("console", self._console)

    def _console(self, message) -> None:
        if "Refused to" in message.text or "Content Security Policy" in message.text:
            self.complaints.append(f"{self.page.url}: {message.text}")

    def open(self, path: str, *, ready: str | None = None) -> None:
        response = self.page.goto(self.base_url + path)
        assert response is not None and response.ok, f"{path}: {response and response.status}"
        if not response.headers.get("content-security-policy"):
            self.missing_header.append(path)
        if ready:
            self.page.wait_for_selector(ready)
        self.page.wait_for_load_state("load")
        self.page.wait_for_timeout(300)  # late scripts, images and the notification socket
        self.complaints += [f"{path}: {v}" for v in self.page.evaluate("window.__violations")]


def test_every_main_page_works_under_the_policy_anonymous_and_as_staff(herd, catalog):
    product, staff = catalog
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            visit = Visit(browser.new_page(), herd.profile.url)
            # Anonymous: public pages, the second product visit from the caches (HAProxy's, the early answer).
            for path in ("/", "/c/lamps/", "/p/brass-desk-lamp/", "/p/brass-desk-lamp/", "/accounts/login/"):
                visit.open(path)

            visit.page.fill("#id_username", staff.username)
            visit.page.fill("#id_password", PASSWORD)
            visit.page.get_by_role("button", name="Log in").click()
            visit.page.wait_for_url("**/accounts/profile/")

            visit.open("/")
            visit.open("/c/lamps/")
            visit.open("/p/brass-desk-lamp/")
            visit.open("/accounts/profile/")
            visit.open("/jobs/")
            visit.open("/notifications/")
            assert visit.page.evaluate(OPEN_SOCKET) == "open"
            # The dashboard draws its SVG from data it fetches: wait for the first drawing.
            visit.open("/ops/", ready="#ops-requests > *")
            visit.open("/admin/")
            visit.open("/admin/catalog/product/")
            visit.open(f"/admin/catalog/product/{product.pk}/change/", ready=".select2-container")
            # The category autocomplete (select2) fetches and draws its choices.
            visit.page.click(".select2-selection")
            visit.page.wait_for_selector(".select2-results__option >> text=Lamps")
            visit.open(f"/admin/accounts/user/{staff.pk}/change/")
        finally:
            browser.close()
    assert visit.missing_header == []
    assert visit.complaints == []
