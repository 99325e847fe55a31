"""The query cache and the object cache, and the one rule that keeps both correct.

**Versions.** Everything cached depends on *versions*: one per table for cached
queries, one per object key for cached objects. A version is a random token and the
primary's WAL position (LSN) at the moment it last changed. Versions live beside the
entries in the "cache" Redis, so one command (``MGET``) reads an entry and its
versions. Entries always have a time to live and versions never do, and that Redis
evicts only keys with one (``volatile-lru``; ``manage.py serve`` refuses any policy
that would evict a version): so a missing version means "not written since this cache
began", never "written, then forgotten".

- A write changes the version of what it touched **on commit** (a rolled-back write
  changes nothing), together with the primary's LSN after the commit.
- Every entry is stored with the versions it was built against, and served only while
  they are still current. A reader that began before a write therefore stores its
  result under versions no later reader accepts: a slow reader cannot put old data
  back (cacheops #22).
- A miss is filled only from the primary or from a replica that has replayed the LSN
  of those versions (``scaling.consistency.read_alias``): never from a replica that
  has not seen the invalidating write (django-cachalot's replica race). A fill waits
  up to ``HERD_FILL_WAIT_SECONDS`` (100 ms) for the replica to replay it before it
  reads the primary: right after a write the replica is usually a few milliseconds
  behind, and a fill can afford that wait where the primary's reads are scarcer.
- Inside a transaction that has written what a lookup depends on, the cache is
  bypassed: the read goes to the primary (through the transaction, so it sees its own
  writes) and nothing is stored, as the versions change only at the commit.
- A version never written stands for the cache's *epoch*: a token and the primary's
  LSN when this cache Redis began (was first used, or after it lost its data). Its
  fills must reach only that position, which every replica has long replayed: a
  first build reads the replica at once.

Query cache: ``cached_query(queryset)``, explicit on the selectors that want it. The
tables a write touches are read off the SQL the primary runs (an execute wrapper on
the primary's connections, installed in ``scaling.apps``), so ``.update()``, bulk
deletes and raw SQL invalidate too; only ``COPY`` bypasses it, and code that copies
calls ``invalidate_tables``.

Object cache: ``ObjectCache`` (declared beside the code that assembles the object, one
key function per kind). Keys carry the release and a hash of the object's fields, so
two versions mid-rollout, or a changed shape, never read each other's entries. An
entry past its freshness is rebuilt by one reader while the others keep serving it
(it is still correct: a change would have invalidated it); a missing entry is built
by one reader while the others wait for it briefly.

Each lookup counts a hit or a miss per cache (``query``, each object kind) in this
process (``scaling.metrics.count_cache``): the dashboard's hit ratios.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.db import connections, transaction
from django.db.models import QuerySet
from redis.exceptions import RedisError

from scaling import consistency, metrics
from scaling.replicas import PRIMARY

logger = logging.getLogger(__name__)

_VERSION_PREFIX = "herd:version:"
# "token:lsn" for every version never written since this cache Redis began.
_EPOCH = "herd:version:epoch"

# Give each key a new token and raise its LSN (never lower it: bumps may arrive out of
# order). KEYS are version keys, ARGV[1] the LSN, then one token per key. Values are
# "token:lsn" strings, compared as numbers but written back as they came (Lua's
# numbers are doubles).
_BUMP = """
for i, key in ipairs(KEYS) do
  local lsn = ARGV[1]
  local current = redis.call('GET', key)
  local old = current and string.match(current, ':(%d+)$')
  if old and tonumber(old) > tonumber(lsn) then
    lsn = old
  end
  redis.call('SET', key, ARGV[i + 1] .. ':' .. lsn)
end
return 1
"""


@dataclass(frozen=True)
class Versions:
    tokens: tuple[str, ...]
    lsn: int | None  # what a fill must have replayed; None: nothing to wait for


# --------------------------------------------------------------------------- versions


@functools.cache
def _cache() -> BaseCache:
    """This process's handle on the cache backend. Django builds a new one for every
    request context (``caches``), which costs more CPU than a warm page's whole lookup;
    a django-redis backend is safe to share between threads."""
    return caches.create_connection("default")


@functools.cache
def _redis():
    """The cache Redis, raw: versions and entries in one command."""
    return _cache().client.get_client()


def _lookup(names: Iterable[str], entry_key: str | None = None) -> tuple[Versions, Any]:
    """The current versions of ``names`` and the cache entry under ``entry_key`` (None
    when absent), read with one ``MGET``."""
    keys = [_EPOCH, *(_VERSION_PREFIX + name for name in sorted(set(names)))]
    cache = _cache()
    if entry_key is not None:
        keys.append(cache.client.make_key(entry_key))
    redis = _redis()
    values = redis.mget(keys)
    epoch = values[0] or _begin_epoch(redis)
    raw = values.pop() if entry_key is not None else None
    tokens, lsns = [], []
    for value in values[1:]:
        token, _, lsn = (value or epoch).decode().partition(":")
        tokens.append(token)
        lsns.append(int(lsn))
    entry = cache.client.decode(raw) if raw is not None else None
    return Versions(tuple(tokens), max(lsns, default=None)), entry


def _begin_epoch(redis) -> bytes:
    # A new or emptied cache Redis: whatever was written before is covered by the
    # primary's position now. The first process to get here sets it; all read the same.
    redis.set(_EPOCH, f"{secrets.token_hex(8)}:{consistency.current_lsn()}", nx=True)
    return redis.get(_EPOCH)


def read_versions(names: Iterable[str]) -> Versions:
    """The current versions of ``names``."""
    return _lookup(names)[0]


def bump_versions(names: Iterable[str]) -> None:
    """Give ``names`` new versions now, at the primary's current LSN. Call after commit."""
    names = sorted(set(names))
    if not names:
        return
    lsn = consistency.current_lsn()
    try:
        tokens = [secrets.token_hex(8) for _ in names]
        keys = [_VERSION_PREFIX + n for n in names]
        _redis().eval(_BUMP, len(names), *keys, lsn, *tokens)
    except RedisError:
        # Stale reads would follow: make it loud. The entries expire with their timeout.
        logger.exception("could not invalidate %s", names)


def bump_on_commit(names: Iterable[str], using: str = PRIMARY) -> None:
    names = tuple(names)

    def bump() -> None:
        bump_versions(names)

    bump.version_names = names  # read by _written_here while the commit is pending
    transaction.on_commit(bump, using=using)


def _written_here(names: Iterable[str]) -> bool:
    """Whether the transaction open on the primary has written any of ``names``: their
    versions change only at its commit, so until then the cache holds entries older than
    this transaction's own writes, and whatever it reads it must not store (a rollback
    would leave it there). Django's pending commit hooks are the record: a rolled-back
    savepoint drops its own."""
    connection = connections[PRIMARY]
    if not connection.in_atomic_block:
        return False
    pending = {name for _, hook, _ in connection.run_on_commit for name in getattr(hook, "version_names", ())}
    return not pending.isdisjoint(names)


# --------------------------------------------------------------------------- query cache


def _table_version_name(table: str) -> str:
    return f"table:{table}"


def invalidate_tables(tables: Iterable[str]) -> None:
    """For writes the SQL watcher cannot see (COPY): invalidate on commit."""
    bump_on_commit([_table_version_name(t) for t in tables])


_WRITE = re.compile(r'^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?)\s+"?(\w+)"?', re.IGNORECASE)


def watch_writes(execute, sql, params, many, context):
    """Execute wrapper on the primary: each statement that writes a table invalidates it on commit."""
    result = execute(sql, params, many, context)
    match = _WRITE.match(sql) if sql[:1] in "IUDTiudt " else None
    if match:
        bump_on_commit([_table_version_name(match.group(1))], using=context["connection"].alias)
    return result


def _tables_of(queryset: QuerySet) -> set[str]:
    query = queryset.query
    tables = {query.get_meta().db_table}
    tables.update(join.table_name for join in query.alias_map.values())
    return tables


def cached_query(queryset: QuerySet, timeout: int = 300, extra_tables: Iterable[str] = ()) -> list:
    """The queryset's rows, from the cache when its tables have not changed since.

    Key: a hash of the release, the SQL and parameters (as compiled for the primary, so
    the same for every alias). The entry holds the versions of the tables it read and is
    served only while they are current. Subqueries over other tables are not seen: name
    those tables in ``extra_tables``.
    """
    if not settings.HERD_CACHES_ENABLED:
        return list(queryset)
    tables = _tables_of(queryset) | set(extra_tables)
    if _written_here(_table_version_name(t) for t in tables):
        return list(queryset.using(PRIMARY))
    sql, params = queryset.query.get_compiler(using=PRIMARY).as_sql()
    key = f"{settings.HERD_RELEASE}:q:{hashlib.sha256(repr((sql, params)).encode()).hexdigest()}"
    try:
        versions, entry = _lookup((_table_version_name(t) for t in tables), key)
    except RedisError:
        return list(queryset.using(consistency.read_alias()))
    hit = entry is not None and entry["versions"] == versions.tokens
    metrics.count_cache("query", hit=hit)
    if hit:
        return entry["rows"]
    with consistency.at_least(versions.lsn):
        consistency.wait_for_replica(settings.HERD_FILL_WAIT_SECONDS)
        rows = list(queryset.using(consistency.read_alias()))
    _cache().set(key, {"versions": versions.tokens, "rows": rows}, timeout)
    return rows


# --------------------------------------------------------------------------- object cache


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
        """Caches off, or this transaction changed the object (``_written_here``)."""
        return not settings.HERD_CACHES_ENABLED or _written_here([self._version_name(ident)])

    def get(self, ident: str) -> Any:
        if self._bypassed(ident):
            return self.build(ident)
        key = self.key(ident)
        try:
            versions, entry = _lookup([self._version_name(ident)], key)
        except RedisError:
            return self.build(ident)
        if entry is not None and entry["version"] == versions.tokens:
            if entry["fresh_until"] > time.time() or self._lock(key) is False:
                metrics.count_cache(self.kind, hit=True)
                return entry["value"]
            # Past freshness and we hold the lock: rebuild once, others keep serving.
            metrics.count_cache(self.kind, hit=False)
            return self._rebuild(ident, key, versions)
        metrics.count_cache(self.kind, hit=False)
        locked = self._lock(key)
        if locked is False:
            return self._wait_for(ident, key, versions)
        # Locked, or the cache is down (None): build it ourselves.
        return self._rebuild(ident, key, versions)

    def _lock(self, key: str) -> bool | None:
        """True: ours. False: someone else rebuilds. None: the cache Redis is unreachable."""
        return _cache().add(f"{key}:lock", 1, timeout=max(int(self.wait_seconds * 5), 5))

    def _rebuild(self, ident: str, key: str, versions: Versions) -> Any:
        cache = _cache()
        try:
            with consistency.at_least(versions.lsn):
                consistency.wait_for_replica(settings.HERD_FILL_WAIT_SECONDS)
                value = self.build(ident)
            cache.set(
                key,
                {"version": versions.tokens, "fresh_until": time.time() + self.fresh_seconds, "value": value},
                self.fresh_seconds + self.keep_seconds,
            )
            return value
        finally:
            cache.delete(f"{key}:lock")

    def _wait_for(self, ident: str, key: str, versions: Versions) -> Any:
        cache = _cache()
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
        _cache().set(key, {"version": versions.tokens, "value": value}, self.fresh_seconds + self.keep_seconds)
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
        versions, entry = _lookup([self._version_name(ident)], key)
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
