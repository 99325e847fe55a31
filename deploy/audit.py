"""``make audit``: Lighthouse scores and screenshots of the main pages, on a herd of its own.

Brings up the ``audit`` profile's herd with the demo data (its own ports, so the local herd
and the tests are untouched; ``make audit`` takes it down afterwards) and logs in as
``demo``: the home page, a category, a search, a product, the log-in page, and the jobs page
logged in. Lighthouse, pinned with its integrity hashes in deploy/lighthouse/package-lock.json
and installed there by ``npm ci`` when missing or stale, runs with mobile settings (its
default) in Debian's Chromium, which Playwright launches with the session in its cookie jar
for the logged-in page; its four category scores per page go into the generated block of
docs/DESIGN-AUDIT.md with the date and commit. Playwright saves each page at phone (360 px)
and desktop (1280 px) width into docs/screenshots/. Exits non-zero, writing nothing, if the
herd does not come up or a run fails.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from deploy.doc_blocks import ROOT, provenance, replace_block
from deploy.herd.control import Herd
from deploy.herd.debian import ensure_packages
from deploy.herd.processes import HerdError
from deploy.herd.profiles import PROFILES
from deploy.npm import ensure_pinned, pinned_version
from deploy.visitor import Visitor

PROFILE = PROFILES["audit"]
LIGHTHOUSE_DIR = Path(__file__).parent / "lighthouse"
LIGHTHOUSE_CLI = LIGHTHOUSE_DIR / "node_modules" / "lighthouse" / "cli" / "index.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu"]
# The Debian packages the audit needs beside the herd's: command -> package.
PACKAGES = {CHROMIUM: "chromium", "/usr/bin/npm": "npm"}
# Lighthouse runs per page, each score their median (``AUDIT_RUNS``).
RUNS = int(os.environ.get("AUDIT_RUNS", "3"))
CATEGORIES = ["performance", "accessibility", "best-practices", "seo"]
REPORT = ROOT / "docs" / "DESIGN-AUDIT.md"
SCREENSHOTS = ROOT / "docs" / "screenshots"
BEGIN, END = "<!-- audit:begin -->", "<!-- audit:end -->"
DEMO_USER, DEMO_PASSWORD = "demo", "herd-demo-password"
WIDTHS = {"phone": {"width": 360, "height": 740}, "desktop": {"width": 1280, "height": 900}}


def pages(visitor: Visitor) -> list[tuple[str, str, bool]]:
    """(name, path, logged in) of each audited page, the category and product found by following links."""
    home = visitor.get("/").text
    category = re.search(r'href="(/c/[^"/]+/)"', home)
    if category is None:
        raise SystemExit("audit: the home page links no category; is the demo data loaded (seed_demo)?")
    listing = visitor.get(category.group(1)).text
    product = re.search(r'href="(/p/[^"/]+/)"', listing)
    if product is None:
        raise SystemExit(f"audit: {category.group(1)} lists no product")
    return [
        ("home", "/", False),
        ("category", category.group(1), False),
        ("search", "/products/?q=a", False),
        ("product", product.group(1), False),
        ("log-in", "/accounts/login/", False),
        ("jobs", "/jobs/", True),
    ]


def install_lighthouse() -> str:
    """The pinned Lighthouse's version, installed first when missing or stale (deploy/npm.py)."""
    try:
        ensure_pinned(LIGHTHOUSE_DIR, "lighthouse")
    except RuntimeError as error:
        raise HerdError(str(error)) from error
    return pinned_version(LIGHTHOUSE_DIR, "lighthouse")


def median_scores(url: str, session: str | None, runs: int = RUNS) -> dict[str, int]:
    """Each category's median score (the lower of the middle two for an even count) over
    ``runs`` Lighthouse runs: one run's performance score moves with the machine's load,
    and Lighthouse's own advice on variability is the median of several."""
    every = [lighthouse(url, session) for _ in range(runs)]
    print(f"audit: {url}: " + ", ".join(f"{n} {[scores[n] for scores in every]}" for n in CATEGORIES), flush=True)
    return {name: statistics.median_low(scores[name] for scores in every) for name in CATEGORIES}


def lighthouse(url: str, session: str | None, attempts: int = 3) -> dict[str, int]:
    """The four category scores (0-100) of one Lighthouse run with mobile settings, logged in
    with ``session`` if given; a run whose trace Chromium failed to record (Lighthouse's
    NO_NAVSTART, now and then in headless mode) is run again, up to ``attempts`` times."""
    for attempt in range(1, attempts + 1):
        try:
            return _lighthouse_once(url, session)
        except RuntimeError as error:
            print(f"audit: attempt {attempt} of {attempts} on {url}: {error}", file=sys.stderr, flush=True)
    raise SystemExit(f"audit: Lighthouse failed {attempts} times on {url}")


def _lighthouse_once(url: str, session: str | None) -> dict[str, int]:
    """Lighthouse attached to a fresh Chromium of our own (``--port``): a logged-in page is
    audited with the session in the browser's cookie jar, as a shopper's browser holds it, so
    the page's own requests (its WebSocket's handshake too) carry it; a ``Cookie`` header
    given to Lighthouse reaches the page's HTTP requests only, and the socket was refused."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        profile, output = Path(folder) / "chromium", Path(folder) / "report.json"
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--remote-debugging-port=0"]
        )
        try:
            if session:
                browser.add_cookies([session_cookie(url, session)])
            # Chromium writes the DevTools port it chose, then the browser's path, here.
            port = (profile / "DevToolsActivePort").read_text().split()[0]
            command = [
                "node",
                str(LIGHTHOUSE_CLI),
                url,
                f"--port={port}",
                "--output=json",
                f"--output-path={output}",
                f"--only-categories={','.join(CATEGORIES)}",
                "--quiet",
            ]
            subprocess.run(command, timeout=300)
        finally:
            browser.close()
        if not output.exists():
            raise RuntimeError("no report")
        report = json.loads(output.read_text())
    if report.get("runtimeError"):
        raise RuntimeError(report["runtimeError"].get("code", "runtime error"))
    if report.get("finalDisplayedUrl") != url:  # a page behind log-in sends a stranger to log-in
        raise SystemExit(f"audit: {url} ended at {report.get('finalDisplayedUrl')}, not the page to audit")
    return {name: round(report["categories"][name]["score"] * 100) for name in CATEGORIES}


def session_cookie(url: str, session: str) -> dict[str, str]:
    """The session cookie, for Playwright, on ``url``'s host."""
    return {"name": "sessionid", "value": session, "domain": urlsplit(url).hostname or "", "path": "/"}


def screenshots(base_url: str, audited: list[tuple[str, str, bool]], session: str) -> list[str]:
    """Each page at each width, light colour scheme; the files written, relative to docs/."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for width_name, viewport in WIDTHS.items():
                for logged_in in (False, True):
                    context = browser.new_context(viewport=viewport, color_scheme="light")
                    if logged_in:
                        context.add_cookies([session_cookie(base_url, session)])
                    page = context.new_page()
                    for name, path, needs_login in audited:
                        if needs_login != logged_in:
                            continue
                        page.goto(base_url.rstrip("/") + path, wait_until="load")
                        target = SCREENSHOTS / f"{name}-{width_name}.png"
                        page.screenshot(path=str(target))
                        written.append(str(target.relative_to(REPORT.parent)))
                    context.close()
        finally:
            browser.close()
    return written


def block(
    scores: dict[str, dict[str, int]],
    audited: list[tuple[str, str, bool]],
    shots: list[str],
    measured: str,
    version: str,
) -> str:
    lines = [
        BEGIN,
        "<!-- Written by deploy/audit.py (make audit): edit the prose outside these markers. -->",
        f"## Lighthouse {version}, mobile settings, {datetime.now(UTC):%Y-%m-%d}, commit {measured}",
        "",
        f"Each score is the median of {RUNS} runs on the page.",
        "",
        "| page | path | " + " | ".join(CATEGORIES) + " |",
        "|---|---|" + "---:|" * len(CATEGORIES),
    ]
    for name, path, logged_in in audited:
        shown = f"`{path}`" + (" (logged in)" if logged_in else "")
        lines.append(f"| {name} | {shown} | " + " | ".join(str(scores[name][c]) for c in CATEGORIES) + " |")
    lines += ["", "### Screenshots", ""]
    for name, _, _ in audited:
        pair = [s for s in shots if Path(s).name.startswith(f"{name}-")]
        lines.append(f"- {name}: " + ", ".join(f"[{Path(s).stem.split('-')[-1]}]({s})" for s in pair))
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    base_url = PROFILE.url
    measured = provenance()  # before this run writes its screenshots into the tree
    try:
        ensure_packages(extra=PACKAGES)
        version = install_lighthouse()
        Herd(PROFILE).up()
    except (HerdError, subprocess.CalledProcessError) as error:
        print(f"audit: {error}", file=sys.stderr)
        return 1
    visitor = Visitor(base_url)
    try:
        logged_in = visitor.log_in(DEMO_USER, DEMO_PASSWORD)
    except OSError as error:
        print(f"audit: the audit herd does not answer at {base_url} ({error})", file=sys.stderr)
        return 1
    if logged_in.status_code != 302:
        print(f"audit: could not log in as {DEMO_USER} ({logged_in.status_code})", file=sys.stderr)
        return 1
    session = visitor.client.cookies["sessionid"]
    audited = pages(Visitor(base_url))
    scores = {}
    for name, path, needs_login in audited:
        print(f"audit: Lighthouse on {path}", flush=True)
        scores[name] = median_scores(base_url.rstrip("/") + path, session if needs_login else None)
    shots = screenshots(base_url, audited, session)
    replace_block(REPORT, BEGIN, END, block(scores, audited, shots, measured, version))
    print(f"audit: wrote {REPORT.relative_to(ROOT)} and {len(shots)} screenshots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
