"""What crawlers may read: the catalog, log-in and sign-up; not the rest of /accounts/ nor
the admin. Pages behind log-in send a visitor without a session (a crawler) to log-in."""

from urllib.robotparser import RobotFileParser

import pytest

pytestmark = pytest.mark.django_db


def test_robots_txt_lets_crawlers_read_log_in_and_sign_up_and_nothing_else_of_accounts(client):
    response = client.get("/robots.txt")
    assert response.status_code == 200
    robots = RobotFileParser()
    robots.parse(response.content.decode().splitlines())
    for path in ("/", "/c/lamps/", "/products/?q=lamp", "/accounts/login/", "/accounts/signup/"):
        assert robots.can_fetch("*", path), path
    for path in ("/accounts/profile/", "/accounts/password/reset/x/y/", "/admin/", "/admin/login/"):
        assert not robots.can_fetch("*", path), path


def test_the_log_in_page_asks_no_crawler_to_leave_it_out_of_its_index(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert "X-Robots-Tag" not in response.headers
    assert b"noindex" not in response.content


@pytest.mark.parametrize("path", ["/jobs/", "/accounts/profile/"])
def test_a_page_behind_log_in_sends_a_crawler_to_log_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/accounts/login/?next={path}"
