"""Shard settings: a bad SHARD_DATABASE_URLS or HERD_SHARD_MAP fails in one clear line."""

import pytest

from config.tests.test_settings import assert_one_line_error, manage


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SHARD_DATABASE_URLS", "mysql://herd@127.0.0.1/herd_shard1"),
        ("SHARD_DATABASE_URLS", ","),
        ("HERD_SHARD_MAP", "shard1:0-511,shard3:512-1023"),
        ("HERD_SHARD_MAP", "shard1:0-511"),
        ("HERD_SHARD_MAP", "shard1:0-600,shard2:512-1023"),
        ("HERD_SHARD_MAP", "shard1:zero-511,shard2:512-1023"),
    ],
)
def test_a_bad_shard_setting_is_named_in_one_line(setting, value):
    assert_one_line_error(manage("check", **{setting: value}), setting)


def test_a_shard_map_that_places_every_logical_shard_is_accepted():
    result = manage("check", HERD_SHARD_MAP="shard1:0-511,shard2:512-1023")
    assert result.returncode == 0, result.stderr
