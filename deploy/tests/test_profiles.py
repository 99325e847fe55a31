"""Where the herd's processes keep their state: a clone anywhere works (``deploy.herd.profiles``)."""

import shutil
import tempfile
from pathlib import Path

import pytest

from deploy.herd import profiles
from deploy.herd.services import Postgres, RabbitMQ


@pytest.fixture
def closed_folder():
    """A folder only root may enter, as root's home or one made by ``mktemp -d``."""
    folder = Path(tempfile.mkdtemp(dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder)


def test_a_clone_the_server_users_cannot_enter_keeps_their_data_where_they_can(closed_folder, monkeypatch):
    clone = closed_folder / "herd"
    clone.mkdir()
    monkeypatch.setattr(profiles, "ROOT", clone)
    monkeypatch.setattr(profiles, "IS_ROOT", True)
    profile = profiles.Profile("local", port_offset=0, durable=True)
    postgres, rabbitmq = Postgres(profile, replica=False), RabbitMQ(profile)
    for place in (postgres.data, postgres.log, rabbitmq.home):
        assert not place.is_relative_to(clone), place
        assert place.is_relative_to(profile.service_state)
    assert profile.service_state.is_relative_to("/var/lib/herd")

    closed_folder.chmod(0o755)  # a clone anyone may enter keeps everything in it
    assert profile.service_state == profile.state
    postgres, rabbitmq = Postgres(profile, replica=False), RabbitMQ(profile)
    assert postgres.data.is_relative_to(clone) and rabbitmq.home.is_relative_to(clone)
