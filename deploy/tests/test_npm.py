"""The tools' npm packages are installed by ``npm ci`` from their lock file when missing or
not the pinned version, and left alone when they are (``deploy.npm``)."""

import json
from pathlib import Path

import pytest

from deploy import npm


@pytest.fixture
def calls(monkeypatch):
    """The commands ``deploy.npm`` runs, recorded instead of run."""
    made = []
    monkeypatch.setattr(npm.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(npm.subprocess, "run", lambda command, **kwargs: made.append((command, kwargs)))
    return made


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "package.json").write_text(json.dumps({"dependencies": {"lighthouse": "12.2.3"}}))
    return tmp_path


def installed(folder, version):
    package = folder / "node_modules" / "lighthouse"
    package.mkdir(parents=True, exist_ok=True)
    (package / "package.json").write_text(json.dumps({"version": version}))


def test_a_missing_or_stale_package_is_installed_from_the_lock_file_and_a_pinned_one_is_left_alone(folder, calls):
    assert npm.ensure_pinned(folder, "lighthouse") == folder / "node_modules" / "lighthouse"
    installed(folder, "12.1.0")
    npm.ensure_pinned(folder, "lighthouse")
    assert len(calls) == 2
    for command, kwargs in calls:
        assert command[:2] == ["/usr/bin/npm", "ci"] and "--ignore-scripts" in command
        assert kwargs["cwd"] == folder and kwargs["check"] is True
    installed(folder, "12.2.3")
    npm.ensure_pinned(folder, "lighthouse")
    assert len(calls) == 2


def test_without_npm_the_error_names_the_debian_package(folder, calls, monkeypatch):
    monkeypatch.setattr(npm.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install npm"):
        npm.ensure_pinned(folder, "lighthouse")


def test_the_pinned_lighthouse_is_locked_with_integrity_hashes():
    folder = Path(__file__).parents[1] / "lighthouse"
    lock = json.loads((folder / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/lighthouse"]["version"] == npm.pinned_version(folder, "lighthouse")
    assert all(entry.get("integrity") for name, entry in lock["packages"].items() if name)
