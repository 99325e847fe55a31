"""A steady load on the herd through HAProxy, counting what failed and what was saved.

Used by the rolling-restart tests (``deploy/tests/test_rolling.py``) and the fault
drills (``deploy/drills.py``). Three kinds of visitor, each a thread:

- ``Shopper``: logged in; reads pages, checks on its profile page that its session is
  still its own, and posts reviews. A review answered 302 is a write *acknowledged*:
  its text is recorded, so the caller can count how many are in the primary afterwards.
  After each acknowledged review it reads the product page again and looks for its own
  text (read-your-writes: a replica that lags must not hide it).
- ``Browser``: anonymous; reads catalog pages with ``Cache-Control: no-cache``, so
  they reach the replicas instead of HAProxy's edge cache.

Every request is counted as idempotent (GET) or a write (POST); anything but a 2xx or
3xx, or a transport error, is a failure, kept with its status, replica and a body
excerpt. A profile page that no longer knows its shopper is a lost session (the
shopper logs in again and goes on). HTTP only (httpx): no Django import.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from deploy.visitor import Visitor

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
USERNAME = re.compile(r'data-username="([^"]+)"')


@dataclass
class Failure:
    who: str
    method: str
    path: str
    status: int | None  # None: no answer (a transport error)
    served_by: str | None
    detail: str
    at: float = field(default_factory=time.monotonic)

    @property
    def idempotent(self) -> bool:
        return self.method in ("GET", "HEAD")

    def __str__(self) -> str:
        answer = f"{self.status} from {self.served_by}" if self.status is not None else "no answer"
        return f"{self.who}: {self.method} {self.path}: {answer}: {self.detail}"


@dataclass
class LoadReport:
    requests: int = 0
    idempotent: int = 0
    writes: int = 0
    failed: list[Failure] = field(default_factory=list)
    saved_reviews: list[str] = field(default_factory=list)
    sessions_lost: int = 0
    stale_reads: int = 0
    statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def failures(self) -> list[str]:
        return [str(failure) for failure in self.failed]

    @property
    def idempotent_failed(self) -> int:
        return sum(1 for failure in self.failed if failure.idempotent)

    @property
    def writes_failed(self) -> int:
        return sum(1 for failure in self.failed if not failure.idempotent)


class Visit(threading.Thread):
    """A thread sending requests through one ``Visitor`` and counting them."""

    def __init__(self, base_url: str, name: str, report: LoadReport, stop: threading.Event, pause: float) -> None:
        super().__init__(daemon=True, name=name)
        self.visitor = Visitor(base_url)
        self.visitor.client.timeout = httpx.Timeout(15.0)
        self.who = name
        self.report = report
        self.stop = stop
        self.pause = pause

    def request(self, method: str, path: str, **kwargs) -> httpx.Response | None:
        with self.report.lock:
            self.report.requests += 1
            if method in ("GET", "HEAD"):
                self.report.idempotent += 1
            else:
                self.report.writes += 1
        try:
            response = self.visitor.client.request(method, self.visitor.url(path), **kwargs)
        except httpx.HTTPError as error:
            self.fail(method, path, None, None, f"{type(error).__name__}: {error}")
            return None
        with self.report.lock:
            self.report.statuses[response.status_code] += 1
        if not 200 <= response.status_code < 400:
            excerpt = " ".join(response.text[:300].split())
            self.fail(method, path, response.status_code, response.headers.get("X-Served-By"), excerpt)
            return None
        return response

    def fail(self, method: str, path: str, status: int | None, served_by: str | None, detail: str) -> None:
        with self.report.lock:
            self.report.failed.append(Failure(self.who, method, path, status, served_by, detail))

    def run(self) -> None:
        while not self.stop.is_set():
            self.step()
            time.sleep(self.pause)

    def step(self) -> None:
        raise NotImplementedError


class Shopper(Visit):
    """One logged-in visitor: reads pages, checks its session, reviews a product it has not reviewed."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        slugs: list[str],
        report: LoadReport,
        stop: threading.Event,
        pause: float = 0.02,
    ) -> None:
        super().__init__(base_url, username, report, stop, pause)
        self.username = username
        self.password = password
        self.slugs = slugs
        self.run_id = f"{time.monotonic_ns()}"
        self.number = 0

    def log_in(self) -> httpx.Response | None:
        try:
            return self.visitor.log_in(self.username, self.password)
        except (AssertionError, httpx.HTTPError):  # no form to log in with: the next check tries again
            return None

    def check_logged_in(self) -> None:
        profile = self.request("GET", "/accounts/profile/")
        if profile is None:
            return
        match = USERNAME.search(profile.text) if profile.status_code == 200 else None
        if not match or match.group(1) != self.username:
            with self.report.lock:
                self.report.sessions_lost += 1
            served_by = profile.headers.get("X-Served-By")
            self.fail("GET", "/accounts/profile/", profile.status_code, served_by, "does not know the visitor")
            self.log_in()

    def step(self) -> None:
        number, self.number = self.number, self.number + 1
        self.request("GET", "/")
        self.request("GET", "/products/")
        self.check_logged_in()
        if number < len(self.slugs):
            self.review(self.slugs[number], number)
        else:
            self.request("GET", f"/p/{self.slugs[0]}/")

    def review(self, slug: str, number: int) -> None:
        page = self.request("GET", f"/p/{slug}/")
        token = CSRF.search(page.text) if page is not None else None
        if page is not None and not token:
            self.fail("GET", f"/p/{slug}/", page.status_code, page.headers.get("X-Served-By"), "no review form")
        if not token:
            return
        text = f"review {number} by {self.username} ({self.run_id})"
        data = {"csrfmiddlewaretoken": token.group(1), "rating": str(1 + number % 5), "text": text}
        saved = self.request("POST", f"/p/{slug}/review/", data=data)
        if saved is None:
            return
        if saved.status_code != 302:
            self.fail("POST", f"/p/{slug}/review/", saved.status_code, saved.headers.get("X-Served-By"), "not 302")
            return
        with self.report.lock:
            self.report.saved_reviews.append(text)
        again = self.request("GET", f"/p/{slug}/")
        if again is not None and text not in again.text:
            with self.report.lock:
                self.report.stale_reads += 1
            self.fail("GET", f"/p/{slug}/", again.status_code, again.headers.get("X-Served-By"), "own review missing")


class Browser(Visit):
    """One anonymous visitor reading catalog pages past HAProxy's edge cache."""

    def __init__(
        self, base_url: str, name: str, slugs: list[str], report: LoadReport, stop: threading.Event, pause: float = 0.02
    ) -> None:
        super().__init__(base_url, name, report, stop, pause)
        self.paths = ["/", "/products/", *(f"/p/{slug}/" for slug in slugs[:20])]
        self.visitor.client.headers["Cache-Control"] = "no-cache"
        self.number = 0

    def step(self) -> None:
        path = self.paths[self.number % len(self.paths)]
        self.number += 1
        self.request("GET", path)
        self.visitor.client.cookies.clear()  # anonymous: never a cookie


class Load:
    """Shoppers (and anonymous browsers) running against a base URL until ``stopped``.

    ``shoppers`` are (username, product slugs to review) pairs; each logs in first.
    """

    def __init__(
        self,
        base_url: str,
        shoppers: list[tuple[str, list[str]]],
        password: str,
        browsers: int = 0,
        pause: float = 0.02,
    ) -> None:
        self.report = LoadReport()
        self.stop = threading.Event()
        self.shoppers = [
            Shopper(base_url, name, password, slugs, self.report, self.stop, pause) for name, slugs in shoppers
        ]
        slugs = shoppers[0][1] if shoppers else []
        self.browsers = [
            Browser(base_url, f"anonymous{n}", slugs, self.report, self.stop, pause) for n in range(browsers)
        ]
        for shopper in self.shoppers:
            login = shopper.log_in()
            if login is None or login.status_code != 302:
                raise RuntimeError(f"{shopper.username} could not log in: {login and login.status_code}")

    @property
    def threads(self) -> list[Visit]:
        return [*self.shoppers, *self.browsers]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        if any(thread.is_alive() for thread in self.threads):
            raise RuntimeError("a load thread did not stop within 30 s")

    def check_everyone_still_logged_in(self) -> None:
        for shopper in self.shoppers:
            shopper.check_logged_in()
