"""The benchmarks' browse mix as a Locust scenario, to load any running herd:
``locust -f bench/locustfile.py --host http://127.0.0.1:8000``.

The mix is bench/catalog.py's (``MIX`` holds its shares, checked against ``mix_paths`` by
bench/tests/test_locustfile.py): product pages by Zipf popularity, category, list, home
and search pages; one shopper in five is logged in (through the real log-in form, with its
CSRF token) and posts a review now and then, through the product page's form. Each
shopper's visit opens with one request of each page kind (a review first, when logged
in); ``--stop-after N`` ends a shopper N tasks later, and the run once every shopper has.
Products and categories are found by browsing the herd at the start (``--catalog-pages``
list pages). Every response is checked (status, and a logged-in page must show the review form); after each review
post the author reads the product page again, and a page without the review just posted
is a failure named ``review shown to its author`` (a stale read). The logged-in shoppers
are accounts that exist: ``--shoppers`` (comma-separated) with ``--shopper-password``, by
default ``make bench``'s own.
"""

from __future__ import annotations

import itertools
import random
import re
import uuid
from urllib.parse import urljoin

import gevent
import requests
from locust import HttpUser, events, task
from locust.exception import StopUser

# Shares of the requests by page kind, as bench/catalog.py's mix_paths draws them.
MIX = {"product page": 81.5, "category page": 11.4, "list page": 2.8, "home": 2.8, "search": 1.4}
# Of a logged-in shopper's requests, the share that posts a review (bench/catalog.py: 1
# in 10 of them, when the path drawn is a product page).
REVIEW_SHARE = 0.08
SEARCH_WORDS = ["a", "pro", "max", "mini", "eco"]
# make bench's shoppers (bench/catalog.py's USERS of them, and their PASSWORD).
BENCH_SHOPPERS = ",".join(f"bench{number}" for number in range(64))
BENCH_PASSWORD = "bench-password-1234"

CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
PRODUCT_LINK = re.compile(r'href="(/p/[^"/]+/)"')
CATEGORY_LINK = re.compile(r'href="(/c/[^"/]+/)"')
NEXT_LINK = re.compile(r'<a rel="next" href="([^"]+)"')


class Catalog:
    """What the shoppers browse, found on the herd's own pages; products by Zipf rank."""

    products: list[str] = []
    categories: list[str] = []
    weights: list[float] = []

    @classmethod
    def discover(cls, host: str, pages: int) -> None:
        with requests.Session() as session:
            session.headers["Cache-Control"] = "no-cache"  # the catalog as it is, past any edge cache
            home = session.get(urljoin(host, "/"), timeout=30)
            home.raise_for_status()
            categories = sorted(set(CATEGORY_LINK.findall(home.text)))
            products: list[str] = []
            url = urljoin(host, "/products/")
            for _ in range(pages):
                page = session.get(url, timeout=30)
                page.raise_for_status()
                products += [p for p in PRODUCT_LINK.findall(page.text) if p not in products]
                following = NEXT_LINK.search(page.text)
                if not following:
                    break
                url = urljoin(url, following.group(1).replace("&amp;", "&"))
        if not products or not categories:
            raise RuntimeError(f"{host} shows {len(products)} products in {len(categories)} categories")
        cls.products, cls.categories = products, categories
        # The product of rank r is viewed in proportion to 1/r (bench/catalog.py's ZIPF_TOP).
        cls.weights = [1 / rank for rank in range(1, len(products) + 1)]

    @classmethod
    def product(cls) -> str:
        return random.choices(cls.products, cls.weights)[0]


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--shoppers", default=BENCH_SHOPPERS, help="logged-in shoppers' usernames, comma-separated")
    parser.add_argument("--shopper-password", default=BENCH_PASSWORD, help="their (common) password")
    parser.add_argument("--catalog-pages", type=int, default=20, help="list pages browsed to find products")
    parser.add_argument("--think-seconds", type=float, default=0.0, help="mean pause between requests")
    parser.add_argument(
        "--stop-after", type=int, default=0, help="each shopper stops after its opening and N more tasks (0: never)"
    )


@events.test_start.add_listener
def _discover(environment, **_kwargs) -> None:
    try:
        Catalog.discover(environment.host, environment.parsed_options.catalog_pages)
    except Exception as error:  # reported as a failure the summary shows, not a traceback
        environment.events.request.fire(
            request_type="GET",
            name="catalog discovery",
            response_time=0,
            response_length=0,
            exception=error,
            context={},
        )


_shopper_numbers = itertools.count()
_shoppers_done = itertools.count(1)
# Logged-in shoppers started and not yet done: with --stop-after the run waits for them,
# whatever the anonymous ones (or their replacements) have done.
_logged_in_busy = 0


class Shopper(HttpUser):
    abstract = True
    tasks_done = 0

    def wait_time(self) -> float:
        """The pause after each task; with ``--stop-after``, the run ends once every shopper is done."""
        options = self.environment.parsed_options
        self.tasks_done += 1
        if options.stop_after and self.tasks_done >= options.stop_after:
            global _logged_in_busy
            if isinstance(self, LoggedInShopper):
                _logged_in_busy -= 1
            if next(_shoppers_done) >= options.num_users and not _logged_in_busy:
                gevent.spawn(self.environment.runner.quit)
            raise StopUser
        return random.uniform(0, 2 * options.think_seconds)

    def on_start(self) -> None:
        # A visit opens with each page kind once, so even a short run covers them all.
        for kind in (self.home, self.list_page, self.category_page, self.search, self.product_page):
            kind()

    def get(self, path: str, name: str, must_show: str = "") -> str:
        with self.client.get(path, name=name, catch_response=True, allow_redirects=False) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code} from {path}")
            elif must_show and must_show not in response.text:
                response.failure(f"{path} does not show {must_show!r}")
            return response.text

    def product_path(self) -> str | None:
        if not Catalog.products:
            return None
        return Catalog.product()

    def show_product(self, path: str) -> str:
        return self.get(path, "product page")

    @task(round(MIX["product page"] * 10))
    def product_page(self) -> None:
        if path := self.product_path():
            self.show_product(path)

    @task(round(MIX["category page"] * 10))
    def category_page(self) -> None:
        if Catalog.categories:
            self.get(random.choice(Catalog.categories), "category page")

    @task(round(MIX["list page"] * 10))
    def list_page(self) -> None:
        self.get("/products/", "list page")

    @task(round(MIX["home"] * 10))
    def home(self) -> None:
        self.get("/", "home")

    @task(round(MIX["search"] * 10))
    def search(self) -> None:
        self.get(f"/products/?q={random.choice(SEARCH_WORDS)}", "search")


class AnonymousShopper(Shopper):
    weight = 4


class LoggedInShopper(Shopper):
    weight = 1

    def on_start(self) -> None:
        global _logged_in_busy
        _logged_in_busy += 1
        options = self.environment.parsed_options
        names = [name.strip() for name in options.shoppers.split(",") if name.strip()]
        self.username = names[next(_shopper_numbers) % len(names)]
        form = self.get("/accounts/login/", "login form")
        token = CSRF_FIELD.search(form)
        data = {"username": self.username, "password": options.shopper_password}
        data["csrfmiddlewaretoken"] = token.group(1) if token else ""
        with self.client.post(
            "/accounts/login/", data=data, name="log in", catch_response=True, allow_redirects=False
        ) as response:
            if response.status_code != 302 or "sessionid" not in self.client.cookies:
                response.failure(f"{self.username} was not logged in ({response.status_code})")
        self.review()
        super().on_start()

    def show_product(self, path: str) -> str:
        # A logged-in shopper's product page carries the review form.
        return self.get(path, "product page", must_show=f'action="{path}review/"')

    # Three requests each (the page, the post, the page again); the other tasks weigh ~1000.
    @task(round(REVIEW_SHARE / (1 - 3 * REVIEW_SHARE) * 1000))
    def review(self) -> None:
        """The product page, its review form posted, and the page again: it must show the review."""
        path = self.product_path()
        if path is None:
            return
        token = CSRF_FIELD.search(self.show_product(path))
        text = f"Reviewed by {self.username}, {uuid.uuid4().hex[:12]}"
        data = {"csrfmiddlewaretoken": token.group(1) if token else "", "rating": random.randint(1, 5), "text": text}
        with self.client.post(
            f"{path}review/", data=data, name="review post", catch_response=True, allow_redirects=False
        ) as response:
            if response.status_code != 302:
                response.failure(f"{response.status_code} from {path}review/")
                return
        self.get(path, "review shown to its author", must_show=text)
