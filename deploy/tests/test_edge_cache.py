"""HAProxy's edge cache, by the rules of deploy/haproxy.cfg.template alone: in front of a
stand-in origin that answers what the app never should (a public page that sets a
cookie; a public page for a request that carried one), nothing of either reaches an
anonymous visitor. A write through the app's services purges its pages from the edge
once committed (scaling/web/edge.py), and a purge that cannot reach the edge fails no
write. Real HAProxy and PostgreSQL; the origin is a few lines of http.server."""

from __future__ import annotations

import itertools
import logging
import socket
import subprocess
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.test import override_settings

from catalog import services
from deploy.herd.haproxy import render_haproxy_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CarelessOrigin(BaseHTTPRequestHandler):
    """Every answer public for 60 s; ``/sets-cookie`` also sets one; each body is unique.
    ``/media/`` answers as the app's ``stored_file`` does: immutable, no ``Vary``."""

    answers = itertools.count(1)

    def do_GET(self) -> None:
        body = f"{self.path} for {self.headers.get('Cookie') or 'anyone'} #{next(self.answers)}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if self.path.startswith("/media/"):
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("Cache-Control", "public, s-maxage=60")
        self.send_header("Vary", "Cookie")
        if "slow" in self.path:  # rendered while a write commits, and long after
            time.sleep(SLOW_RENDER_SECONDS)
        if self.path == "/sets-cookie":
            self.send_header("Set-Cookie", "csrftoken=the-first-visitors-token; Path=/")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


RIG: dict[str, int] = {}
# Long enough to answer after the write committed.
SLOW_RENDER_SECONDS = 1.0


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    origin = ThreadingHTTPServer(("127.0.0.1", 0), CarelessOrigin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    folder = tmp_path_factory.mktemp("edge")
    port, admin = free_port(), free_port()
    config = folder / "haproxy.cfg"
    config.write_text(
        render_haproxy_config(
            bind=f"127.0.0.1:{port}",
            stats_bind=f"127.0.0.1:{free_port()}",
            stats_socket=str(folder / "haproxy.sock"),
            edge_admin=f"ipv4@127.0.0.1:{admin}",
            servers=[("origin", f"127.0.0.1:{origin.server_port}")],
        )
    )
    haproxy = subprocess.Popen(["haproxy", "-f", str(config)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(f"{url}/up", headers={"Cache-Control": "no-cache"}).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "haproxy did not answer"
        time.sleep(0.1)
    RIG["admin"] = admin
    yield url
    haproxy.terminate()
    haproxy.wait(5)
    origin.shutdown()


def test_a_public_cookieless_page_is_stored(edge):
    first, again = httpx.get(f"{edge}/page"), httpx.get(f"{edge}/page")
    assert again.headers.get("X-Cache") == "hit" and again.text == first.text


def test_a_public_page_that_sets_a_cookie_is_never_stored(edge):
    first, again = httpx.get(f"{edge}/sets-cookie"), httpx.get(f"{edge}/sets-cookie")
    assert "X-Cache" not in again.headers and again.text != first.text


def test_a_page_answered_to_a_request_with_a_cookie_never_reaches_an_anonymous_visitor(edge):
    hers = httpx.get(f"{edge}/hers", headers={"Cookie": "sessionid=alice"})
    assert "sessionid=alice" in hers.text
    anonymous = httpx.get(f"{edge}/hers")
    assert "X-Cache" not in anonymous.headers and "alice" not in anonymous.text
    assert httpx.get(f"{edge}/hers", headers={"Cookie": "sessionid=bob"}).text.count("alice") == 0


def test_a_content_addressed_file_is_served_by_the_edge_on_every_repeat_cookie_or_not(edge):
    first = httpx.get(f"{edge}/media/products/abc.avif", headers={"Cookie": "sessionid=alice"})
    assert "X-Cache" not in first.headers
    for cookie in ("sessionid=alice", "sessionid=bob", None):
        again = httpx.get(f"{edge}/media/products/abc.avif", headers={"Cookie": cookie} if cookie else {})
        # The origin numbers each answer: the same number is the same, stored answer.
        assert again.headers.get("X-Cache") == "hit" and again.text == first.text
        assert "Vary" not in again.headers  # the same file for everyone, downstream too


def purging():
    """The app purges this rig's edge (and no other) after the writes made within."""
    return override_settings(HERD_EDGE_ADMIN=[("127.0.0.1", RIG["admin"])])


def cached_twice(url: str) -> httpx.Response:
    first, again = httpx.get(url), httpx.get(url)
    assert again.headers.get("X-Cache") == "hit" and again.text == first.text
    return again


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_after_a_write_the_next_anonymous_read_of_its_pages_passes_the_edge(edge, alice):
    category = services.create_category(name="Edge Lamps", slug="edge-lamps")
    product = services.create_product(
        category=category, name="Edge Lamp", slug="edge-lamp", price=Decimal("10.00"), stock=1
    )
    page, listing = f"{edge}/p/edge-lamp/", f"{edge}/c/edge-lamps/"
    stored = cached_twice(page)
    stored_list = cached_twice(listing)
    unrelated = cached_twice(f"{edge}/p/another-lamp/")

    with purging():
        services.post_review(user=alice, product=product, rating=5, text="Bright")
    fresh = httpx.get(page)
    assert "X-Cache" not in fresh.headers and fresh.text != stored.text  # the origin's new answer
    assert fresh.text.startswith("/p/edge-lamp/ for anyone")  # the replica gets the path as sent
    assert cached_twice(page).text == fresh.text  # the fresh page is the edge's again
    assert httpx.get(listing).text == stored_list.text  # a review leaves the list's copy

    with purging():
        services.update_product(product, price=Decimal("12.00"))
    assert httpx.get(listing).text != stored_list.text  # a price shows on its category's list
    assert httpx.get(f"{edge}/p/another-lamp/").text == unrelated.text


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_an_answer_rendered_while_a_write_commits_is_not_stored(edge):
    category = services.create_category(name="Slow", slug="slow-lamps")
    product = services.create_product(category=category, name="Slow", slug="slow-lamp", price=Decimal("1.00"), stock=1)
    answers = []
    reader = threading.Thread(target=lambda: answers.append(httpx.get(f"{edge}/p/slow-lamp/", timeout=30)))
    reader.start()
    time.sleep(0.2)  # the origin is rendering the old page
    with purging():
        services.update_product(product, price=Decimal("2.00"))
    reader.join(30)
    # Stored as it came back, the old page must not be what the next visitor reads.
    again = httpx.get(f"{edge}/p/slow-lamp/", timeout=30)
    assert "X-Cache" not in again.headers and again.text != answers[0].text


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_purge_that_cannot_reach_the_edge_fails_no_write(alice, caplog):
    category = services.create_category(name="Far", slug="far-away")
    product = services.create_product(category=category, name="Far", slug="far", price=Decimal("1.00"), stock=1)
    with override_settings(HERD_EDGE_ADMIN=[("127.0.0.1", free_port())]), caplog.at_level(logging.WARNING):
        review = services.post_review(user=alice, product=product, rating=4, text="Still written")
    assert review.pk and "unreachable" in caplog.text
