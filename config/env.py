"""Typed readers for settings that come from the environment (12-factor).

Every reader names the variable it reads, so a bad value fails with one line that
says which setting to fix (``ConfigError``), never with a traceback from deep inside
Django. ``manage.py``, ``config.asgi`` and ``config.wsgi`` print that line and exit.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured


class ConfigError(ImproperlyConfigured):
    """A setting from the environment is missing or malformed."""


def string(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise ConfigError(f"{name} is required but not set")
    return value


def optional(name: str) -> str | None:
    """The value, or None when the variable is unset or empty."""
    return os.environ.get(name) or None


def boolean(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def integer(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None


def number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def string_list(name: str, default: str = "") -> list[str]:
    raw = os.environ.get(name, default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def host_ports(name: str) -> list[tuple[str, int]]:
    """``host:port,host:port``; empty when unset."""
    found = []
    for item in string_list(name):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}: {item!r} is not host:port")
        found.append((host, int(port)))
    return found


def networks(name: str, default: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A comma-separated list of addresses or CIDR blocks (``10.0.0.0/8,::1``)."""
    parsed = []
    for item in string_list(name, default):
        try:
            parsed.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name} item {item!r} is not an IP address or CIDR block") from None
    return parsed


def url(name: str, default: str | None, schemes: set[str]) -> str:
    value = string(name, default)
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        allowed = ", ".join(sorted(schemes))
        raise ConfigError(f"{name}={redact(value)!r} is not a URL of scheme {allowed}")
    return value


def url_list(name: str, default: str, schemes: set[str]) -> list[str]:
    urls = string_list(name, default)
    for index, value in enumerate(urls):
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(f"{name} item {index + 1} ({redact(value)!r}) is not a database URL")
    return urls


def shard_map(name: str, aliases: list[str], logical_shards: int = 1024) -> dict[int, str]:
    """``shard1:0-511,shard2:512-1023``: every logical shard placed once, on a known alias.

    Unset: round robin over ``aliases`` (logical shard ``n`` on ``aliases[n % len]``).
    """
    raw = os.environ.get(name, "")
    if not raw.strip():
        return {shard: aliases[shard % len(aliases)] for shard in range(logical_shards)}
    placement: dict[int, str] = {}
    for item in raw.split(","):
        alias, _, span = item.strip().partition(":")
        first, _, last = span.partition("-")
        try:
            shards = range(int(first), int(last or first) + 1)
        except ValueError:
            raise ConfigError(f"{name} item {item.strip()!r} is not alias:first-last") from None
        if alias not in aliases:
            raise ConfigError(f"{name} names {alias!r}, which is not one of {', '.join(aliases)}")
        for shard in shards:
            if shard in placement or not 0 <= shard < logical_shards:
                raise ConfigError(f"{name} places logical shard {shard} twice or outside 0-{logical_shards - 1}")
            placement[shard] = alias
    if len(placement) != logical_shards:
        raise ConfigError(f"{name} places {len(placement)} of the {logical_shards} logical shards; place them all")
    return placement


def redact(value: str) -> str:
    """The URL with its password replaced, safe to print in an error."""
    parts = urlsplit(value)
    if parts.password is None:
        return value
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
