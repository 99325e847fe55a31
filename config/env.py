"""Typed readers for settings that come from the environment (12-factor).

Every reader names the variable it reads, so a bad value fails with one line that
says which setting to fix (``ConfigError``), never with a traceback from deep inside
Django. ``manage.py``, ``config.asgi`` and ``config.wsgi`` print that line and exit.
"""

from __future__ import annotations

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


def redact(value: str) -> str:
    """The URL with its password replaced, safe to print in an error."""
    parts = urlsplit(value)
    if parts.password is None:
        return value
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
