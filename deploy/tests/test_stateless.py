"""Replicas keep no user data: sessions and pictures outlive the replica that made them.

Uses the herd of deploy/tests/conftest.py (web1..web3 behind HAProxy) and restarts the
test profile's session Redis once.
"""

import io
import os
import signal
import time

import pytest
from PIL import Image

from accounts.tests.factories import PASSWORD
from deploy.herd.processes import pid_alive
from deploy.herd.profiles import PROFILES, ROOT
from deploy.herd.services import Redis
from deploy.visitor import Visitor

pytestmark = [
    pytest.mark.herd,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("clear_login_throttles"),
]


@pytest.fixture
def alice(alice, wait_for_replicas):
    """The shared ``alice``, once the replica has her: the herd's replicas log in from it."""
    wait_for_replicas()
    return alice


@pytest.fixture
def visitor(herd):
    return Visitor(herd.profile.url)


def replicas_seen_logged_in(visitor: Visitor, replicas: set[str], attempts: int = 40) -> set[str]:
    seen = set()
    for _ in range(attempts):
        username, replica = visitor.whoami()
        assert username == "alice", f"{replica} did not know the session"
        seen.add(replica)
        if seen >= replicas:
            break
    return seen


def test_a_session_made_on_one_replica_is_known_to_every_replica(herd, alice, visitor):
    assert visitor.log_in("alice", PASSWORD).status_code == 302
    assert replicas_seen_logged_in(visitor, {"web1", "web2", "web3"}) == {"web1", "web2", "web3"}


def test_killing_the_replica_that_served_the_login_logs_nobody_out(herd, alice, visitor):
    login = visitor.log_in("alice", PASSWORD)
    assert login.status_code == 302
    login_replica = next(web for web in herd.webs() if web.name == login.headers["X-Served-By"])
    os.kill(login_replica.pid(), signal.SIGKILL)
    try:
        others = {web.name for web in herd.webs()} - {login_replica.name}
        assert replicas_seen_logged_in(visitor, others) == others
    finally:
        herd.start(login_replica.name)


def test_restarting_the_session_redis_logs_nobody_out(herd, alice, visitor):
    assert visitor.log_in("alice", PASSWORD).status_code == 302
    redis = Redis(PROFILES["test"], "state")
    old_pid = redis.pid()
    redis.stop()
    assert not pid_alive(old_pid)
    redis.start()
    # Every replica stays in rotation (readiness does not require the state Redis).
    herd.wait_in_rotation(herd.haproxy(), ["web1", "web2", "web3"])
    assert replicas_seen_logged_in(visitor, {"web1", "web2", "web3"}) == {"web1", "web2", "web3"}


def files_changed_since(folder, since: float, skip: tuple[str, ...] = ()) -> list[str]:
    changed = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip and d != "__pycache__"]
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            try:
                if os.stat(path).st_mtime >= since:
                    changed.append(path)
            except FileNotFoundError:
                continue
    return changed


def test_a_picture_uploaded_through_one_replica_is_served_by_another_and_touches_no_disk(herd, alice, visitor):
    web1, web2, _ = herd.webs()
    jpeg = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 40, 90)).save(jpeg, "JPEG", quality=90)
    # Big enough that Django's default handlers would have spooled it to a temporary file.
    noise = Image.frombytes("RGB", (1100, 1000), os.urandom(1100 * 1000 * 3))
    big = io.BytesIO()
    noise.save(big, "PNG")
    assert 2.5 * 1024 * 1024 < big.tell() < 5 * 1024 * 1024

    started = time.time() - 1
    assert visitor.log_in("alice", PASSWORD, port=web1.port).status_code == 302
    for upload in (("red.jpg", jpeg.getvalue(), "image/jpeg"), ("noise.png", big.getvalue(), "image/png")):
        saved = visitor.post_form(
            "/accounts/profile/", {"display_name": "Alice", "bio": ""}, files={"picture": upload}, port=web1.port
        )
        assert saved.status_code == 302, saved.text
        assert saved.headers["X-Served-By"] == "web1"

    alice.profile.refresh_from_db(using="default")  # the replica may not have replayed it yet
    picture_url = alice.profile.picture.url
    through_web1 = visitor.get(picture_url, port=web1.port)
    through_web2 = visitor.get(picture_url, port=web2.port)
    assert through_web2.headers["X-Served-By"] == "web2"
    assert through_web1.status_code == through_web2.status_code == 200
    assert through_web2.content == through_web1.content
    assert through_web2.headers["Content-Type"] == "image/webp"
    assert "immutable" in through_web2.headers["Cache-Control"]

    assert [os.listdir(web.tmpdir) for web in herd.webs()] == [[], [], []]
    skip = tuple(str(ROOT / name) for name in (".herd", ".venv", ".pytest_cache", ".git"))
    assert files_changed_since(ROOT, started, skip=skip) == []
