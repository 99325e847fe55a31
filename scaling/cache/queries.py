"""The query cache: ``cached_query(queryset)``, invalidated by the tables the primary writes.

Tables written are read off the SQL the primary runs (``versions.watch_writes``), so
``.update()``, bulk deletes and raw SQL invalidate too; code that uses ``COPY`` calls
``versions.invalidate_tables``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from django.conf import settings
from django.db.models import QuerySet
from redis.exceptions import RedisError

from scaling.cache.versions import cache_backend, lookup, may_fill, table_version_name, written_here
from scaling.db import consistency
from scaling.db.replicas import PRIMARY, primary_health
from scaling.ops import metrics


def _tables_of(queryset: QuerySet) -> set[str]:
    query = queryset.query
    tables = {query.get_meta().db_table}
    tables.update(join.table_name for join in query.alias_map.values())
    return tables


def cached_query(queryset: QuerySet, timeout: int = 300, extra_tables: Iterable[str] = ()) -> list:
    """The queryset's rows, from the cache when its tables have not changed since.

    Key: a hash of the release, the SQL and parameters (as compiled for the primary, so
    the same for every alias; by a replica's connection while the primary is away). The
    entry holds the versions of the tables it read and is served only while they are
    current. Subqueries over other tables are not seen: name those tables in ``extra_tables``.
    """
    if not settings.HERD_CACHES_ENABLED:
        return list(queryset)
    tables = _tables_of(queryset) | set(extra_tables)
    if written_here(table_version_name(t) for t in tables):
        return list(queryset.using(PRIMARY))
    # Compiled as for the primary: the same SQL for every alias (one PostgreSQL version). The
    # compiler may ask its server's version (JSON functions do), and in read-only mode a
    # thread whose primary connection never opened could not: a replica's says the same.
    compiler_alias = PRIMARY if primary_health.is_up() else consistency.read_alias()
    sql, params = queryset.query.get_compiler(using=compiler_alias).as_sql()
    key = f"{settings.HERD_RELEASE}:q:{hashlib.sha256(repr((sql, params)).encode()).hexdigest()}"
    try:
        versions, entry = lookup((table_version_name(t) for t in tables), key)
    except RedisError:
        return list(queryset.using(consistency.read_alias()))
    hit = entry is not None and entry["versions"] == versions.tokens
    metrics.count_cache("query", hit=hit)
    if hit:
        return entry["rows"]
    with consistency.at_least(versions.lsn):
        consistency.wait_for_replica(settings.HERD_FILL_WAIT_SECONDS)
        rows = list(queryset.using(consistency.read_alias()))
    if may_fill():
        cache_backend().set(key, {"versions": versions.tokens, "rows": rows}, timeout)
    return rows
