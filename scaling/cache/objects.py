"""The object cache: ``ObjectCache``, one per kind of assembled object, declared beside the
code that assembles it.

Keys carry the release and a hash of the object's fields, so two releases mid-rollout
never read each other's entries. A stale entry is rebuilt by one reader while the
others keep serving it; a missing one is built by one reader while the others wait briefly.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from scaling.cache.versions import (
    Versions,
    bump_on_commit,
    cache_backend,
    lookup,
    may_fill,
    read_versions,
    written_here,
)
from scaling.db import consistency
from scaling.ops import metrics


@functools.cache
def fields_hash(shape: type) -> str:
    """A short hash of a dataclass's field names and types: a new shape, new keys."""
    spec = [(f.name, str(f.type)) for f in dataclasses.fields(shape)]
    return hashlib.sha256(repr(spec).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class ObjectCache:
    """One kind of assembled object: how to name it, build it, and how long it stays fresh.

    ``build(ident)`` assembles the object from the database (reads go where
    ``read_alias`` sends them); it may raise to say the object does not exist.
    """

    kind: str
    shape: type
    build: Callable[[str], Any]
    fresh_seconds: int = 300
    keep_seconds: int = 3600  # how long an entry past freshness may still be served
    wait_seconds: float = 0.5  # a reader waiting holds one of its replica's few request threads

    def key(self, ident: str) -> str:
        """The one place this kind's keys are named."""
        return f"{settings.HERD_RELEASE}:o:{self.kind}:{fields_hash(self.shape)}:{ident}"

    def _version_name(self, ident: str) -> str:
        return f"object:{self.kind}:{ident}"

    def _bypassed(self, ident: str) -> bool:
        """Caches off, or this transaction changed the object (``written_here``)."""
        return not settings.HERD_CACHES_ENABLED or written_here([self._version_name(ident)])

    def get(self, ident: str) -> Any:
        if self._bypassed(ident):
            return self.build(ident)
        key = self.key(ident)
        try:
            versions, entry = lookup([self._version_name(ident)], key)
        except RedisError:
            return self.build(ident)
        filling = may_fill()
        if entry is not None and entry["version"] == versions.tokens:
            if entry["fresh_until"] > time.time() or not filling or self._lock(key) is False:
                metrics.count_cache(self.kind, hit=True)
                return entry["value"]
            # Past freshness and we hold the lock: rebuild once, others keep serving.
            metrics.count_cache(self.kind, hit=False)
            return self._rebuild(ident, key, versions)
        metrics.count_cache(self.kind, hit=False)
        if not filling:
            with consistency.at_least(versions.lsn):
                return self.build(ident)
        locked = self._lock(key)
        if locked is False:
            return self._wait_for(ident, key, versions)
        # Locked, or the cache is down (None): build it ourselves.
        return self._rebuild(ident, key, versions)

    def _lock(self, key: str) -> bool | None:
        """True: ours. False: someone else rebuilds. None: the cache Redis is unreachable."""
        return cache_backend().add(f"{key}:lock", 1, timeout=max(int(self.wait_seconds * 5), 5))

    def _rebuild(self, ident: str, key: str, versions: Versions) -> Any:
        cache = cache_backend()
        try:
            with consistency.at_least(versions.lsn):
                consistency.wait_for_replica(settings.HERD_FILL_WAIT_SECONDS)
                value = self.build(ident)
            if may_fill():
                cache.set(
                    key,
                    {"version": versions.tokens, "fresh_until": time.time() + self.fresh_seconds, "value": value},
                    self.fresh_seconds + self.keep_seconds,
                )
            return value
        finally:
            cache.delete(f"{key}:lock")

    def _wait_for(self, ident: str, key: str, versions: Versions) -> Any:
        cache = cache_backend()
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)
            entry = cache.get(key)
            if entry is not None and entry["version"] == versions.tokens:
                return entry["value"]
        # The builder is slow or gone: build without caching rather than wait longer.
        with consistency.at_least(versions.lsn):
            return self.build(ident)

    def derived(self, ident: str, name: str, make: Callable[[], Any]) -> Any:
        """Something made from the object (its page rendered for anonymous visitors),
        cached under the object's version: flushed with it, never older than it."""
        if self._bypassed(ident):
            return make()
        try:
            key, versions, value = self._derived_entry(ident, name)
        except RedisError:
            return make()
        metrics.count_cache(f"{self.kind}:{name}", hit=value is not None)
        if value is not None:
            return value
        value = make()
        if may_fill():
            cache_backend().set(
                key, {"version": versions.tokens, "value": value}, self.fresh_seconds + self.keep_seconds
            )
        return value

    def cached(self, ident: str, name: str) -> Any | None:
        """What ``derived(ident, name, ...)`` holds while it is current; None otherwise
        (a miss is left to ``derived``, which counts it, makes and stores it)."""
        if self._bypassed(ident):
            return None
        try:
            _key, _versions, value = self._derived_entry(ident, name)
        except RedisError:
            return None
        if value is not None:
            metrics.count_cache(f"{self.kind}:{name}", hit=True)
        return value

    def _derived_entry(self, ident: str, name: str) -> tuple[str, Versions, Any | None]:
        """The derived entry's key, the object's current versions, and the entry's value
        if it was made under them (else None). Raises ``RedisError``."""
        key = f"{self.key(ident)}:{name}"
        versions, entry = lookup([self._version_name(ident)], key)
        current = entry is not None and entry["version"] == versions.tokens
        return key, versions, entry["value"] if current else None

    def invalidate_on_commit(self, idents: Iterable[str]) -> None:
        """Call from the write path (signals): the entries change version on commit."""
        bump_on_commit([self._version_name(i) for i in idents])

    def warm(self, ident: str) -> None:
        """Build now and store (the rebuild job and ``warm_cache``)."""
        if self._bypassed(ident):
            return
        key = self.key(ident)
        self._rebuild(ident, key, read_versions([self._version_name(ident)]))
