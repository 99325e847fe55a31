"""Moving one logical shard to another database while the herd serves and writes
(``manage.py shards move``; the five steps: docs/SHARDING.md).

``move`` loses and duplicates no committed write, and readers that follow the map always
find every committed row. A mover that dies before the switch leaves the source in
charge: run it again (the copy is an upsert). Tables are copied in ``copy_order``
(parents before children, by the foreign keys between the sharded models) and deleted
from the source in the reverse order. Ids need no care: the target makes ids for the
shard only after the source stopped, and ids carry milliseconds.
"""

from __future__ import annotations

import graphlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import connections, models, transaction
from django.utils import timezone

from scaling.db.replicas import PRIMARY
from scaling.sharding import shards


class MoveRefused(Exception):
    """The move cannot be made as asked (unknown database, already there, not owned)."""


@dataclass(frozen=True)
class MoveReport:
    logical_shard: int
    source: str
    target: str
    rows: dict[str, int]  # per table, on the target at the switch
    held_lock_ms: float
    deleted: dict[str, int]


def copy_order() -> list[type[models.Model]]:
    """Every sharded model, each after the sharded models its foreign keys point to
    (parents before children): the order of copying; deleting goes the other way."""
    sharded = shards.sharded_models()
    graph = graphlib.TopologicalSorter()
    for model in sharded:
        parents = {
            field.related_model
            for field in model._meta.concrete_fields
            if field.is_relation and field.related_model in sharded and field.related_model is not model
        }
        graph.add(model, *sorted(parents, key=lambda parent: parent._meta.label_lower))
    return list(graph.static_order())


def _tables() -> list[tuple[str, str, list[str]]]:
    """(table, shard key column, columns) of every sharded model, parents before children."""
    return [
        (
            model._meta.db_table,
            model._meta.get_field(shards.shard_key(model)).column,
            [field.column for field in model._meta.concrete_fields],
        )
        for model in copy_order()
    ]


def _of_shard(key: str, logical_shard: int) -> str:
    return f"{key} % {shards.LOGICAL_SHARDS} = {int(logical_shard)}"


def _copy_table(source: str, target: str, table: str, key: str, columns: list[str], logical_shard: int) -> None:
    """Make the target's rows of the shard in ``table`` exactly the source's (inside a target transaction)."""
    names = ", ".join(columns)
    staging = f"herd_move_{table}"
    with connections[source].cursor() as out, connections[target].cursor() as into:
        into.execute(f"DROP TABLE IF EXISTS {staging}")
        into.execute(f"CREATE TEMPORARY TABLE {staging} (LIKE {table}) ON COMMIT DROP")
        select = f"SELECT {names} FROM {table} WHERE {_of_shard(key, logical_shard)}"  # noqa: S608 (our own names)
        with (
            out.copy(f"COPY ({select}) TO STDOUT (FORMAT BINARY)") as reading,
            into.copy(f"COPY {staging} ({names}) FROM STDIN (FORMAT BINARY)") as writing,
        ):
            for block in reading:
                writing.write(block)
        updates = ", ".join(f"{column} = EXCLUDED.{column}" for column in columns if column != "id")
        into.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging} "  # noqa: S608
            f"ON CONFLICT (id) DO UPDATE SET {updates}"
        )
        into.execute(
            f"DELETE FROM {table} AS t WHERE {_of_shard('t.' + key, logical_shard)} "  # noqa: S608
            f"AND NOT EXISTS (SELECT 1 FROM {staging} AS s WHERE s.id = t.id)"
        )


def _copy(source: str, target: str, logical_shard: int) -> None:
    for table, key, columns in _tables():
        _copy_table(source, target, table, key, columns, logical_shard)


def fingerprint(alias: str, logical_shard: int) -> dict[str, tuple[int, str]]:
    """Per table: how many rows of the shard ``alias`` holds, and a checksum of all of them."""
    result = {}
    with connections[alias].cursor() as cursor:
        for table, key, _columns in _tables():
            cursor.execute(
                f"SELECT COUNT(*), COALESCE(md5(string_agg(t::text, ',' ORDER BY t.id)), '') "  # noqa: S608
                f"FROM {table} AS t WHERE {_of_shard('t.' + key, logical_shard)}"
            )
            count, digest = cursor.fetchone()
            result[table] = (count, digest)
    return result


def _set_owned(alias: str, logical_shard: int, owned: bool) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "INSERT INTO scaling_shardownership (logical_shard, owned) VALUES (%s, %s) "
            "ON CONFLICT (logical_shard) DO UPDATE SET owned = EXCLUDED.owned",
            [logical_shard, owned],
        )


def _owned(alias: str, logical_shard: int, lock: bool = False) -> bool:
    """Whether ``alias`` owns the shard; ``lock``: and hold its row ``FOR UPDATE`` (waits for writers)."""
    query = "SELECT owned FROM scaling_shardownership WHERE logical_shard = %s"
    with connections[alias].cursor() as cursor:
        cursor.execute(query + (" FOR UPDATE" if lock else ""), [logical_shard])
        row = cursor.fetchone()
    return bool(row and row[0])


def _place(logical_shard: int, target: str) -> None:
    """The stored map names ``target`` for the shard, with a version above every other."""
    from scaling.sharding.models import ShardPlacement

    with transaction.atomic(using=PRIMARY):
        with connections[PRIMARY].cursor() as cursor:
            cursor.execute("LOCK TABLE scaling_shardplacement IN EXCLUSIVE MODE")
        version = (ShardPlacement.objects.using(PRIMARY).aggregate(v=models.Max("version"))["v"] or 0) + 1
        ShardPlacement.objects.using(PRIMARY).update_or_create(
            logical_shard=logical_shard, defaults={"database": target, "version": version, "moved_at": timezone.now()}
        )


def _delete(alias: str, logical_shard: int) -> dict[str, int]:
    deleted = {}
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        if _owned(alias, logical_shard, lock=True):
            raise MoveRefused(f"{alias} owns logical shard {logical_shard} again: its rows are kept")
        for table, key, _columns in reversed(_tables()):
            cursor.execute(f"DELETE FROM {table} WHERE {_of_shard(key, logical_shard)}")  # noqa: S608
            deleted[table] = cursor.rowcount
    return deleted


def move(
    logical_shard: int,
    target: str,
    *,
    grace_seconds: float | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> MoveReport:
    """Move ``logical_shard`` to the shard database ``target``; see the module's steps and guarantees."""
    if not 0 <= logical_shard < shards.LOGICAL_SHARDS:
        raise MoveRefused(f"logical shards are numbered 0 to {shards.LOGICAL_SHARDS - 1}, not {logical_shard}")
    if target not in shards.shard_aliases():
        raise MoveRefused(f"{target!r} is not a shard database; SHARD_DATABASE_URLS gives {shards.shard_aliases()}")
    shards.shard_map.refresh(force=True)
    source = shards.alias_of_shard(logical_shard)
    if source == target:
        raise MoveRefused(f"logical shard {logical_shard} is on {target} already")

    with transaction.atomic(using=target):
        if _owned(target, logical_shard, lock=True):
            raise MoveRefused(f"{target} owns logical shard {logical_shard} already, though the map says {source}")
        _set_owned(target, logical_shard, False)
    say(f"1. copying logical shard {logical_shard} from {source} to {target} while writes go on")
    with transaction.atomic(using=target):
        _copy(source, target, logical_shard)

    say(f"2. locking the shard on {source} (waits for writes in flight), copying again, comparing")
    with transaction.atomic(using=source):
        locked_at = time.monotonic()
        if not _owned(source, logical_shard, lock=True):
            raise MoveRefused(f"{source} no longer owns logical shard {logical_shard}: another move ran")
        with transaction.atomic(using=target):
            _copy(source, target, logical_shard)
            at_switch = fingerprint(source, logical_shard)
            copied = fingerprint(target, logical_shard)
            if copied != at_switch:
                raise MoveRefused(f"the copy differs from the source ({copied} against {at_switch}); nothing moved")
            _set_owned(target, logical_shard, True)
            # Before the map names the target: its replica serves the shard only once it
            # has replayed the final copy.
            transaction.on_commit(lambda: shards.record_write(target, logical_shard), using=target)
        say(f"3. switching: {target} owns the shard, the map names it, {source} lets go")
        _place(logical_shard, target)
        _set_owned(source, logical_shard, False)
        time.sleep(0.002)  # the source's last id and the target's first are milliseconds apart
        held_lock_ms = (time.monotonic() - locked_at) * 1000
    shards.shard_map.refresh(force=True)

    rows_at_switch = {table: count for table, (count, _digest) in at_switch.items()}
    with connections[target].cursor() as cursor:
        for table, key, _columns in _tables():
            cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE {_of_shard(key, logical_shard)}")  # noqa: S608
            if cursor.fetchone()[0] < rows_at_switch[table]:
                raise MoveRefused(f"{target} lost rows of {table} after the switch; {source} keeps its copy")
    say(f"4. verified: {target} holds {rows_at_switch} and every write since")

    grace = grace_seconds if grace_seconds is not None else 2 * settings.HERD_SHARD_MAP_SECONDS + 1
    say(f"5. waiting {grace:.1f}s for every process to read the new map, then deleting from {source}")
    time.sleep(grace)
    deleted = _delete(source, logical_shard)
    say(f"   deleted {deleted} from {source}")
    return MoveReport(logical_shard, source, target, rows_at_switch, held_lock_ms, deleted)


def row_counts() -> dict[str, dict[str, int]]:
    """Per shard database, per sharded table: how many rows it holds."""
    counts: dict[str, dict[str, int]] = {}
    for alias in shards.shard_aliases():
        with connections[alias].cursor() as cursor:
            counts[alias] = {}
            for table, _key, _columns in _tables():
                cursor.execute(f"SELECT COUNT(*) FROM {table}")  # noqa: S608
                counts[alias][table] = cursor.fetchone()[0]
    return counts
