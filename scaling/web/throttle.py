"""Throttles shared by every replica, in the state Redis, and their 429.

``Backoff`` locks a key for a doubling time after its free failures; ``RateLimit`` allows
``limit`` events per key per window. Each attempt is one Lua script on Redis's clock, so
concurrent attempts on any replica all count; keys are hashed. The rules and why not
django-axes: docs/SECURITY.md.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_redis import get_redis_connection

REDIS_ALIAS = "state"

# KEYS: counters; ARGV: per key, free failures, first lock (ms), longest lock (ms), memory (ms).
_COUNT_FAILURE = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local longest = 0
for i, key in ipairs(KEYS) do
  local free, first = tonumber(ARGV[4*i-3]), tonumber(ARGV[4*i-2])
  local cap, memory = tonumber(ARGV[4*i-1]), tonumber(ARGV[4*i])
  local failures = redis.call('HINCRBY', key, 'failures', 1)
  local lock = 0
  if failures >= free then
    lock = math.floor(math.min(first * 2 ^ math.min(failures - free, 40), cap))
    redis.call('HSET', key, 'until', now + lock)
  end
  redis.call('PEXPIRE', key, math.max(memory, lock))
  longest = math.max(longest, lock)
end
return math.floor(longest)
"""

# KEYS: counters. Returns the longest remaining lock, in ms.
_LOCKED_FOR = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local longest = 0
for _, key in ipairs(KEYS) do
  local locked_until = tonumber(redis.call('HGET', key, 'until') or 0)
  longest = math.max(longest, locked_until - now)
end
return longest
"""

# KEYS[1]: the counter; ARGV: limit, window (ms). Returns 0 if allowed, else ms to wait.
_HIT = """
local hits = redis.call('INCR', KEYS[1])
if hits == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if hits <= tonumber(ARGV[1]) then return 0 end
return math.max(redis.call('PTTL', KEYS[1]), 1)
"""


class RateLimited(Exception):
    """Refused for now; ``retry_after`` seconds from now it may be tried again.

    Deliberately not a PermissionDenied: ``django.contrib.auth.authenticate`` would turn
    that into a plain "wrong password", hiding the wait and the 429.
    """

    def __init__(self, retry_after: float, reason: str = "Too many requests.") -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        self.reason = reason
        super().__init__(f"{reason} Retry after {self.retry_after} s.")


def _hashed(purpose: str, parts: Sequence[str]) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return f"herd:throttle:{purpose}:{digest}"


def _script(source: str) -> Callable:
    return get_redis_connection(REDIS_ALIAS).register_script(source)


@dataclass(frozen=True)
class Backoff:
    purpose: str
    free_failures: int
    lock_seconds: float
    max_lock_seconds: float
    forget_seconds: float

    def counter(self, *parts: str) -> Counter:
        return Counter(self, _hashed(self.purpose, parts))


@dataclass(frozen=True)
class Counter:
    backoff: Backoff
    key: str


def locked_for(counters: Sequence[Counter]) -> float:
    """Seconds until every one of ``counters`` is unlocked; 0 when none is locked."""
    return max(0, _script(_LOCKED_FOR)(keys=[c.key for c in counters])) / 1000


def count_failure(counters: Sequence[Counter]) -> float:
    """Count one failure on each counter at once; returns the longest lock it started (s)."""
    args = []
    for counter in counters:
        backoff = counter.backoff
        args += [
            backoff.free_failures,
            int(backoff.lock_seconds * 1000),
            int(backoff.max_lock_seconds * 1000),
            int(backoff.forget_seconds * 1000),
        ]
    return _script(_COUNT_FAILURE)(keys=[c.key for c in counters], args=args) / 1000


def clear(counter: Counter) -> None:
    get_redis_connection(REDIS_ALIAS).delete(counter.key)


@dataclass(frozen=True)
class RateLimit:
    purpose: str
    limit: int
    window_seconds: float
    reason: str = "Too many requests."

    def hit(self, *parts: str) -> None:
        """Count one event for ``parts``; raises ``RateLimited`` once over the limit."""
        wait = _script(_HIT)(keys=[_hashed(self.purpose, parts)], args=[self.limit, int(self.window_seconds * 1000)])
        if wait:
            raise RateLimited(wait / 1000, self.reason)


def client_address(request: HttpRequest | None) -> str:
    """The client's address: uvicorn puts it in ``REMOTE_ADDR``, from ``X-Forwarded-For``
    only when the connection came from one of ``HERD_TRUSTED_PROXIES`` (HAProxy)."""
    return (request.META.get("REMOTE_ADDR") or "unknown") if request is not None else "unknown"


def rate_limited_response(request: HttpRequest, refusal: RateLimited) -> HttpResponse:
    seconds = refusal.retry_after
    wait = f"{seconds} second{'s' * (seconds != 1)}" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"
    response = render(request, "429.html", {"reason": refusal.reason, "wait": wait}, status=429)
    response["Retry-After"] = str(refusal.retry_after)
    return response


class RateLimitedMiddleware:
    """The one place a ``RateLimited`` from any view (or from authentication) becomes a 429."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, RateLimited):
            return rate_limited_response(request, exception)
        return None
