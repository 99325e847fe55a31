"""Versions: what every cached entry depends on, and the one rule that keeps the caches correct.

One version per table (the query cache) or per object key (the object cache): a random
token and the primary's WAL position when it last changed, kept without a time to live
beside the entries in the "cache" Redis. A write changes the versions it touched on
commit; an entry is served only while the versions it was built against are current,
and a miss is filled only from a database that has replayed their position, so never
while the main primary is unreachable (``may_fill``: reads then come from a replica
whatever it has replayed). A change whose versions could not be written (the cache Redis
away) is written again by this process once the cache Redis answers (``replay_missed``).
docs/CACHING.md tells why each rule is there.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.cache import BaseCache, caches
from django.db import connections, transaction
from redis.exceptions import RedisError

from scaling.db import positions
from scaling.db.consistency import UNKNOWN_LSN
from scaling.db.replicas import PRIMARY, primary_health

logger = logging.getLogger(__name__)

_VERSION_PREFIX = "herd:version:"
# "token:lsn" for every version never written since this cache Redis began.
_EPOCH = "herd:version:epoch"
# The epoch while the primary cannot say its position: stored nowhere; filled entries never
# carry it (``may_fill``), and its position sends the reads of a miss to the primary or,
# in read-only mode, to a replica.
_NO_EPOCH = f"read-only:{UNKNOWN_LSN}".encode()

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
def cache_backend() -> BaseCache:
    """This process's handle on the cache backend. Django builds a new one for every
    request context (``caches``), which costs more CPU than a warm page's whole lookup;
    a django-redis backend is safe to share between threads."""
    return caches.create_connection("default")


@functools.cache
def _redis():
    """The cache Redis, raw: versions and entries in one command."""
    return cache_backend().client.get_client()


def lookup(names: Iterable[str], entry_key: str | None = None) -> tuple[Versions, Any]:
    """The current versions of ``names`` and the cache entry under ``entry_key`` (None
    when absent), read with one ``MGET``."""
    keys = [_EPOCH, *(_VERSION_PREFIX + name for name in sorted(set(names)))]
    cache = cache_backend()
    if entry_key is not None:
        keys.append(cache.client.make_key(entry_key))
    redis = _redis()
    values = redis.mget(keys)
    if _missed and replay_missed():  # it answers again: the missed versions first
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
    if (lsn := primary_health.position()) is None:
        return _NO_EPOCH
    redis.set(_EPOCH, f"{secrets.token_hex(8)}:{lsn}", nx=True)
    return redis.get(_EPOCH)


def may_fill() -> bool:
    """Whether a miss may be stored: not in read-only mode (the main primary unreachable),
    where a fill may come from a replica behind the versions it would be stored under."""
    return primary_health.is_up()


def read_versions(names: Iterable[str]) -> Versions:
    """The current versions of ``names``."""
    return lookup(names)[0]


def bump_versions(names: Iterable[str]) -> None:
    """Give ``names`` new versions now, at the primary's current LSN. Call after commit."""
    names = set(names)
    if not names:
        return
    if not _bump(names | _take_missed(), positions.current()):
        # Entries built before this change would be served as current: make it loud.
        logger.error("could not invalidate %s: again once the cache Redis answers", sorted(names))


# Versions this process could not write, written by its next call that reaches the
# cache Redis. Held in memory: a replica killed before then leaves them to the entries'
# timeouts.
_missed: set[str] = set()
_missed_lock = threading.Lock()


def _take_missed() -> set[str]:
    with _missed_lock:
        names = set(_missed)
        _missed.clear()
    return names


def replay_missed() -> bool:
    """Write the versions this process missed, at the primary's position now (every entry
    built before is superseded, a fill waits for what it missed). Whether it wrote any."""
    if (lsn := primary_health.position()) is None:
        return False
    names = _take_missed()
    if names and _bump(names, lsn):
        logger.info("invalidated %d versions missed while the cache Redis was away", len(names))
        return True
    return False


def _bump(names: set[str], lsn: int) -> bool:
    """``_BUMP`` on ``names``; on failure they are kept in ``_missed``."""
    ordered = sorted(names)
    try:
        tokens = [secrets.token_hex(8) for _ in ordered]
        _redis().eval(_BUMP, len(ordered), *(_VERSION_PREFIX + n for n in ordered), lsn, *tokens)
        return True
    except RedisError:
        with _missed_lock:
            _missed.update(ordered)
        return False


def bump_on_commit(names: Iterable[str], using: str = PRIMARY) -> None:
    names = tuple(names)

    def bump() -> None:
        bump_versions(names)

    bump.version_names = names  # read by written_here while the commit is pending
    transaction.on_commit(bump, using=using)


def written_here(names: Iterable[str]) -> bool:
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


def table_version_name(table: str) -> str:
    return f"table:{table}"


def invalidate_tables(tables: Iterable[str]) -> None:
    """For writes the SQL watcher cannot see (COPY): invalidate on commit."""
    bump_on_commit([table_version_name(t) for t in tables])


_WRITE = re.compile(r'^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?)\s+"?(\w+)"?', re.IGNORECASE)


def watch_writes(execute, sql, params, many, context):
    """Execute wrapper on the primary: each statement that writes a table invalidates it on commit."""
    result = execute(sql, params, many, context)
    match = _WRITE.match(sql) if sql[:1] in "IUDTiudt " else None
    if match:
        bump_on_commit([table_version_name(match.group(1))], using=context["connection"].alias)
    return result
