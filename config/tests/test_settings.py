"""Configuration comes from the environment; bad configuration fails in one clear line."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def production(**env: str) -> dict[str, str]:
    return {
        "DJANGO_ENV": "production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
        "DJANGO_ALLOWED_HOSTS": "herd.example.com",
        **env,
    }


def assert_one_line_error(result: subprocess.CompletedProcess, setting: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("configuration error:")
    assert setting in lines[0]


def test_check_deploy_is_clean_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production())
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    result = manage("check", **production(DJANGO_SECRET_KEY=""))
    assert_one_line_error(result, "DJANGO_SECRET_KEY")


def test_production_refuses_to_start_with_debug_on():
    result = manage("check", **production(DJANGO_DEBUG="true"))
    assert_one_line_error(result, "DJANGO_DEBUG")


def test_an_unreachable_database_is_named_in_one_line():
    result = manage("migrate", DATABASE_URL="postgres://herd@127.0.0.1:1/herd")
    assert_one_line_error(result, "DATABASE_URL")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("DATABASE_URL", "mysql://herd@localhost/herd"),
        ("SHARD_REPLICA_URLS", "postgres://herd@127.0.0.1:55433/herd_shard1"),  # one, for two shards
        ("HERD_METRICS_ALLOWED_CIDRS", "10.0.0.0/8,10.0.0.300/32"),
        ("HERD_LOG_FORMAT", "xml"),
    ],
)
def test_a_malformed_setting_is_named_in_one_line(setting, value):
    result = manage("check", **{setting: value})
    assert_one_line_error(result, setting)


def test_a_replica_refuses_to_serve_when_the_session_redis_is_unreachable():
    result = manage("serve", "--port", "1", REDIS_STATE_URL="redis://127.0.0.1:1/0")
    assert_one_line_error(result, "REDIS_STATE_URL")


STORAGE_OF_UPLOADS = 'from django.core.files.storage import storages; s = storages["default"]; print(type(s).__name__)'


S3 = {
    "S3_BUCKET": "herd-media",
    "S3_PRIVATE_BUCKET": "herd-private",
    "S3_ACCESS_KEY_ID": "id",
    "S3_SECRET_ACCESS_KEY": "secret",
}


def test_with_an_s3_bucket_uploaded_files_go_to_object_storage():
    result = manage("shell", "-c", STORAGE_OF_UPLOADS + "; print(s.bucket_name)", **S3)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["S3Storage", "herd-media"]


# Signing a URL is computed here, without a request to S3.
PRIVATE_STORAGE = """
import json
from django.core.files.storage import storages
s = storages["private"]
print(json.dumps({
    "bucket": s.bucket_name, "location": s.location, "acl": s.default_acl, "signed": s.querystring_auth,
    "expire": s.querystring_expire, "domain": s.custom_domain, "parameters": s.object_parameters,
    "url": s.url("exports/x.csv"),
}))
"""


def test_with_an_s3_bucket_private_files_go_to_a_private_bucket_read_only_through_short_signed_urls():
    custom_domain = {"S3_CUSTOM_DOMAIN": "media.herd.example.com", "S3_REGION": "eu-west-1"}
    result = manage("shell", "-c", PRIVATE_STORAGE, **production(**S3, **custom_domain))
    assert result.returncode == 0, result.stderr
    private = json.loads(result.stdout.strip().splitlines()[-1])
    assert private | {"url": None} == {
        "bucket": "herd-private",
        "location": "private",
        "acl": "private",
        "signed": True,
        "expire": 300,
        "domain": None,
        "parameters": {"CacheControl": "private, no-store"},
        "url": None,
    }
    assert private["url"].startswith("https://herd-private.s3.amazonaws.com/private/exports/x.csv?"), private["url"]
    assert "X-Amz-Expires=300" in private["url"] and "X-Amz-Signature=" in private["url"]


def test_with_an_s3_bucket_the_private_bucket_is_required():
    result = manage("check", **{**S3, "S3_PRIVATE_BUCKET": ""})
    assert_one_line_error(result, "S3_PRIVATE_BUCKET")


def test_without_an_s3_bucket_uploaded_files_go_to_the_database():
    result = manage("shell", "-c", STORAGE_OF_UPLOADS)
    assert result.stdout.split()[-1:] == ["DatabaseStorage"]


LOG_A_LINE = 'import logging; logging.getLogger("herd.example").warning("hello")'


def test_production_logs_one_json_object_per_line_and_development_readable_lines():
    production_line = manage("shell", "-c", LOG_A_LINE, **production(HERD_REPLICA_ID="web7")).stderr.strip()
    assert json.loads(production_line.splitlines()[-1]) | {"time": None} == {
        "time": None,
        "level": "WARNING",
        "logger": "herd.example",
        "replica": "web7",
        "request_id": None,
        "message": "hello",
    }
    development_line = manage("shell", "-c", LOG_A_LINE, HERD_REPLICA_ID="web7").stderr.strip().splitlines()[-1]
    assert development_line.endswith("web7 WARNING herd.example [-] hello")


SESSIONS_AND_DATABASES = (
    "from django.conf import settings; print(settings.SESSION_ENGINE); "
    "print(','.join(a for a in settings.DATABASES if a.startswith('replica')) or 'no-replicas')"
)


def test_sessions_can_live_in_the_database_of_a_herd_without_replicas():
    result = manage("shell", "-c", SESSIONS_AND_DATABASES, HERD_SESSION_ENGINE="database", DATABASE_REPLICA_URLS="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["django.contrib.sessions.backends.db", "no-replicas"]


def test_an_unknown_session_engine_is_named_in_one_line():
    result = manage("check", HERD_SESSION_ENGINE="memcached")
    assert_one_line_error(result, "HERD_SESSION_ENGINE")


def test_the_state_redis_is_found_through_sentinel_when_sentinels_are_named():
    code = (
        "import json; from django.conf import settings as s; state = s.CACHES['state'];"
        " host = s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0];"
        " print(json.dumps([state['LOCATION'], state['OPTIONS']['SENTINELS'], host['master_name'], host['db']]))"
    )
    result = manage(
        "shell",
        "-c",
        code,
        REDIS_STATE_SENTINELS="10.0.0.1:26379, 10.0.0.2:26379",
        REDIS_STATE_MASTER="state",
        REDIS_STATE_URL="redis://:secret@ignored:6379/0",
        REDIS_CHANNELS_URL="redis://:secret@ignored:6379/1",
    )
    assert result.returncode == 0, result.stderr
    location, sentinels, master, db = json.loads(result.stdout.strip().splitlines()[-1])
    assert location == "redis://:secret@state/0"
    assert sentinels == [["10.0.0.1", 26379], ["10.0.0.2", 26379]]
    assert (master, db) == ("state", 1)


def test_a_malformed_sentinel_list_fails_in_one_line():
    assert_one_line_error(manage("check", REDIS_STATE_SENTINELS="10.0.0.1"), "REDIS_STATE_SENTINELS")
