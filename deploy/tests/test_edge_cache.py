"""HAProxy's edge cache, by the rules of deploy/haproxy.cfg.template alone: in front of a
stand-in origin that answers what the app never should (a public page that sets a
cookie; a public page for a request that carried one), nothing of either reaches an
anonymous visitor. Real HAProxy; the origin is a few lines of http.server."""

from __future__ import annotations

import itertools
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

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
        if self.path == "/sets-cookie":
            self.send_header("Set-Cookie", "csrftoken=the-first-visitors-token; Path=/")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    origin = ThreadingHTTPServer(("127.0.0.1", 0), CarelessOrigin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    folder = tmp_path_factory.mktemp("edge")
    port = free_port()
    config = folder / "haproxy.cfg"
    config.write_text(
        render_haproxy_config(
            bind=f"127.0.0.1:{port}",
            stats_bind=f"127.0.0.1:{free_port()}",
            stats_socket=str(folder / "haproxy.sock"),
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
