"""npm packages the tools pin in a folder of their own (``package.json`` with the exact
version, ``package-lock.json`` with the integrity hashes): installed there by ``npm ci``
(no install scripts) when missing or not the pinned version, never from an unpinned name.
deploy/tests/axe/ (axe-core, for the accessibility test) and deploy/lighthouse/ (``make audit``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path


def pinned_version(folder: Path, package: str) -> str:
    return json.loads((folder / "package.json").read_text())["dependencies"][package]


def ensure_pinned(folder: Path, package: str) -> Path:
    """``folder``'s node_modules/``package`` at its pinned version, installed first when
    missing or stale. Raises ``RuntimeError`` without npm, ``CalledProcessError`` if it fails."""
    installed = folder / "node_modules" / package
    manifest = installed / "package.json"
    if manifest.exists() and json.loads(manifest.read_text())["version"] == pinned_version(folder, package):
        return installed
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is needed to install {package} (Debian: apt-get install npm)")
    print(f"installing {package} {pinned_version(folder, package)} into {folder}", flush=True)
    subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, check=True
    )
    return installed
