"""A visitor of the herd over real HTTP: keeps cookies, sends the CSRF token like a browser."""

from __future__ import annotations

import re

import httpx


class Visitor:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(timeout=20, follow_redirects=False)

    def url(self, path: str, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port}{path}" if port else f"{self.base_url}{path}"

    def get(self, path: str, port: int | None = None) -> httpx.Response:
        return self.client.get(self.url(path, port))

    def post_form(self, path: str, data: dict, files: dict | None = None, port: int | None = None) -> httpx.Response:
        """GET the form (for its CSRF token), then POST it, both to the same place."""
        page = self.get(path, port)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, f"no CSRF token in {path} ({page.status_code})"
        return self.client.post(self.url(path, port), data={"csrfmiddlewaretoken": token.group(1), **data}, files=files)

    def log_in(self, username: str, password: str, port: int | None = None) -> httpx.Response:
        return self.post_form("/accounts/login/", {"username": username, "password": password}, port=port)

    def whoami(self, port: int | None = None) -> tuple[str | None, str]:
        """(username shown on the profile page or None when logged out, replica that answered)."""
        response = self.get("/accounts/profile/", port)
        replica = response.headers["X-Served-By"]
        if response.status_code == 302:
            return None, replica
        match = re.search(r'data-username="([^"]+)"', response.text)
        return (match.group(1) if match else None), replica
