"""Failure counters in Redis, shared by every replica: the basis of login throttling.

A counter per (purpose, key) counts failures within a fixed window that starts at the
first failure. Counting is one atomic ``INCR`` in Redis, so attempts spread across
replicas, or made concurrently, are all counted; nothing lives in a process. Keys are
hashed, so no user name or address is stored in clear. The counters live in the
"state" Redis, which never evicts, so pressure on memory cannot reset them.

Why not django-axes: its cache handler reads, adds one and writes back, which loses
counts under concurrent attempts on different replicas.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django_redis import get_redis_connection


@dataclass(frozen=True)
class FailureThrottle:
    purpose: str
    limit: int
    window_seconds: int
    redis_alias: str = "sessions"

    def _key(self, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return f"herd:throttle:{self.purpose}:{digest}"

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may try again; 0 when it may try now."""
        redis = get_redis_connection(self.redis_alias)
        count, ttl = redis.pipeline().get(self._key(key)).ttl(self._key(key)).execute()
        if count is not None and int(count) >= self.limit:
            return max(int(ttl), 1)
        return 0

    def record_failure(self, key: str) -> int:
        """Count one failure; returns the count within the window."""
        redis = get_redis_connection(self.redis_alias)
        name = self._key(key)
        count, _ = redis.pipeline().incr(name).expire(name, self.window_seconds, nx=True).execute()
        return int(count)

    def reset(self, key: str) -> None:
        get_redis_connection(self.redis_alias).delete(self._key(key))
