"""Where the herd's processes keep their state (a clone anywhere works) and the ports they
listen on, every one reserved before a herd starts (``deploy.herd.profiles``)."""

import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from deploy.herd import profiles
from deploy.herd.control import Herd
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


def test_every_port_of_a_profile_is_among_the_ports_reserved_for_it():
    for profile in profiles.every_profile():
        herd = Herd(profile, replicas=profiles.RESERVED_REPLICAS)
        listening = {process.port for process in herd.processes() if process.port}
        listening |= {herd.haproxy().stats_port, int(RabbitMQ(profile).env()["RABBITMQ_DIST_PORT"])}
        urls = [url for key, value in profile.django_env().items() if key.endswith("_URL") for url in value.split(",")]
        listening |= {urlsplit(url).port for url in urls if url}
        assert listening <= profile.ports(), (profile.name, sorted(listening - profile.ports()))


def test_no_two_profiles_share_a_port():
    every = list({profile.name: profile for profile in profiles.every_profile()}.values())
    for number, profile in enumerate(every):
        for other in every[number + 1 :]:
            shared = profile.ports() & other.ports()
            assert not shared, (profile.name, other.name, sorted(shared))


def test_one_write_reserves_every_port_of_every_profile_and_keeps_what_was_reserved(monkeypatch):
    class ReservedPorts:
        text, writes = "1000-1002,55432\n", 0

        def read_text(self):
            return self.text

        def write_text(self, text):
            self.text, self.writes = text, self.writes + 1

    reserved = ReservedPorts()
    monkeypatch.setattr(profiles, "RESERVED_PORTS", reserved)
    monkeypatch.setattr(profiles, "IS_ROOT", True)
    profiles.reserve_ports()
    ports = profiles.port_set(reserved.text)
    assert {1000, 1001, 1002, 55432} <= ports
    for slot in range(profiles.TEST_SLOTS):
        assert profiles.test_profile(slot).ports() <= ports
    for profile in profiles.PROFILES.values():
        assert profile.ports() <= ports
    profiles.reserve_ports()
    assert reserved.writes == 1
    profiles.reserve_ports(replicas=20)
    assert profiles.PROFILES["local"].web_port(20) in profiles.port_set(reserved.text)
