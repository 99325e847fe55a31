"""The Locust scenario (bench/locustfile.py) on a tiny headless run against the test herd
(deploy/tests/conftest.py): every page kind of the mix is requested, and none fails."""

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from accounts.tests.factories import PASSWORD
from catalog import services
from deploy.herd.profiles import ROOT

pytestmark = [
    pytest.mark.herd,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("clear_login_throttles"),
]

PAGE_KINDS = {
    "home",
    "list page",
    "category page",
    "search",
    "product page",
    "login form",
    "log in",
    "review post",
    "review shown to its author",
}


@pytest.fixture
def shop(make_user, wait_for_replicas):
    """Two categories of products and two shoppers, locust0 and locust1, on the replica."""
    for c in range(2):
        category = services.create_category(name=f"Locust {c}", slug=f"locust-{c}")
        for p in range(15):
            services.create_product(
                category=category, name=f"Pro lamp {c}-{p}", slug=f"lamp-{c}-{p}", price=Decimal("9.90"), stock=3
            )
    for number in range(2):
        make_user(f"locust{number}")
    wait_for_replicas()


def summary(herd, tmp_path: Path) -> dict[str, dict[str, int]]:
    """The final stats of a headless run of 5 shoppers, each ending 5 tasks after its opening
    requests (one of each kind), by request name: requests and failures. From ``--json-file``,
    written from the same stats as the printed summary (the ``--csv`` file, written by a
    greenlet of its own, was sometimes left with none). ``-t`` only bounds a run that hangs."""
    locust = Path(sys.executable).parent / "locust"
    prefix = tmp_path / "run"
    command = [str(locust), "-f", str(ROOT / "bench" / "locustfile.py"), "--host", herd.profile.url.rstrip("/")]
    command += ["--headless", "-u", "5", "-r", "5", "-t", "90s", "--stop-after", "5"]
    command += ["--only-summary", "--json-file", str(prefix)]
    command += ["--shoppers", "locust0,locust1", "--shopper-password", PASSWORD]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    stats = Path(f"{prefix}.json")
    assert stats.exists(), result.stderr[-3000:]
    rows: dict[str, dict[str, int]] = {}
    for entry in json.loads(stats.read_text()):
        row = rows.setdefault(entry["name"], {"requests": 0, "failures": 0})
        row["requests"] += entry["num_requests"]
        row["failures"] += entry["num_failures"]
    return rows


def test_a_tiny_locust_run_requests_every_page_kind_without_a_failure(herd, shop, tmp_path):
    rows = summary(herd, tmp_path)
    requested = {name for name, row in rows.items() if row["requests"] > 0}
    assert not PAGE_KINDS - requested, f"never requested: {PAGE_KINDS - requested}"
    failures = {name: row["failures"] for name, row in rows.items() if row["failures"]}
    assert not failures, failures
