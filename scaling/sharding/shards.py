"""Per-user data on shard databases: the sharded models (those that declare ``SHARD_KEY``),
the shard map, row ids, the shard router, writes under the shard's ownership row
(``writing``) and explicit fan-out. The story: docs/SHARDING.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, OperationalError, connections, models, transaction
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from scaling.db import consistency, positions
from scaling.db.replicas import CONNECTION_ERRORS, PRIMARY, primary_health, replica_health

logger = logging.getLogger(__name__)

LOGICAL_SHARDS = 1024
EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SHARD_BITS = 13
SEQUENCE_BITS = 10
# Tables that live in the shard databases besides the sharded models' own.
# The ownership rows live on every shard; the scaling app made their table before sharding was an app.
SHARD_SIDE_MODELS = frozenset({("sharding", "shardownership"), ("scaling", "shardownership")})

T = TypeVar("T")


class ShardKeyMissing(LookupError):
    """A query on a sharded model that does not say which user's shard it is for."""


class ShardMoved(OperationalError):
    """The logical shard kept moving while a write looked for it (transient: retry)."""


# --------------------------------------------------------------------------- ids and keys


def shard_of_user(user_id: int) -> int:
    """The logical shard of every row of the user ``user_id``."""
    return int(user_id) % LOGICAL_SHARDS


def shard_of_id(row_id: int) -> int:
    """The logical shard a row id was made for (its middle 13 bits)."""
    return (int(row_id) >> SEQUENCE_BITS) & ((1 << SHARD_BITS) - 1)


def is_row_id(value: int) -> bool:
    """Whether ``value`` could be a row id (``herd_next_id``): a positive 64-bit integer
    whose middle bits name a logical shard. Ids from a URL are checked before routing."""
    return 0 < value < 2**63 and shard_of_id(value) < LOGICAL_SHARDS


def time_of_id(row_id: int) -> int:
    """When the id was made, in milliseconds since the Unix epoch."""
    return (int(row_id) >> (SHARD_BITS + SEQUENCE_BITS)) + EPOCH_MS


@dataclasses.dataclass(frozen=True)
class _Discovered:
    """The sharded models of the app registry, and what the router asks about them."""

    models: tuple[type[models.Model], ...]
    labels: frozenset[str]  # "app_label.modelname" of each sharded model
    known: frozenset[tuple[str, str]]  # (app_label, model_name) of every installed model
    app_labels: frozenset[str]  # apps with a sharded model


@functools.cache
def _discovered() -> _Discovered:
    apps.check_models_ready()
    found = tuple(
        sorted(
            (model for model in apps.get_models() if getattr(model, "SHARD_KEY", None)),
            key=lambda model: model._meta.label_lower,
        )
    )
    return _Discovered(
        models=found,
        labels=frozenset(model._meta.label_lower for model in found),
        known=frozenset((model._meta.app_label, model._meta.model_name) for model in apps.get_models()),
        app_labels=frozenset(model._meta.app_label for model in found),
    )


def is_sharded(model: type[models.Model]) -> bool:
    """Whether ``model`` declares a ``SHARD_KEY`` (checked by label, so the historical
    models of migrations count too)."""
    return model._meta.label_lower in _discovered().labels


def shard_key(model: type[models.Model]) -> str:
    """The column of ``model`` that holds its user's id (``owner_id``, ``user_id``)."""
    return getattr(model, "SHARD_KEY", None) or apps.get_model(model._meta.label).SHARD_KEY


def sharded_models() -> list[type[models.Model]]:
    """Every installed model that declares a ``SHARD_KEY``, by label."""
    return list(_discovered().models)


def on_shards(app_label: str, model_name: str | None) -> bool:
    """Whether a migration of ``model_name`` (None: an operation naming no model, such as
    ``RunSQL``) of ``app_label`` runs on the shard databases: a sharded model's, an
    ownership table's, or, naming no installed model, one of an app with sharded models."""
    if (app_label, model_name) in SHARD_SIDE_MODELS:
        return True
    found = _discovered()
    if model_name is not None and (app_label, model_name) in found.known:
        return f"{app_label}.{model_name}" in found.labels
    return app_label in found.app_labels


def shard_aliases() -> list[str]:
    return list(settings.SHARD_DATABASES)


# --------------------------------------------------------------------------- the map


class ShardMap:
    """This process's copy of the stored map, checked at most every ``HERD_SHARD_MAP_SECONDS``.

    The stored map (``scaling_shardplacement`` on the main primary) is the truth; the
    configured one (``HERD_SHARD_MAP``) seeds it and stands in until it exists. While the
    primary is away the copy is refreshed from a replica, or kept when none answers: a
    stale copy can make a write retry, never land in the wrong place (see ``writing``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._placement: dict[int, str] | None = None
        self._version: tuple[int, int] | None = None
        self._checked_at = 0.0

    def alias(self, logical_shard: int) -> str:
        if self._placement is None or time.monotonic() - self._checked_at >= settings.HERD_SHARD_MAP_SECONDS:
            self.refresh()
        return self._placement[logical_shard]

    def placement(self) -> dict[int, str]:
        self.alias(0)
        return dict(self._placement)

    def refresh(self, force: bool = False) -> None:
        """Reload the stored map if its version changed (``force``: whatever the version),
        from the main primary, or from a replica while the primary is unreachable."""
        with self._lock:
            source = consistency.read_only_replica() or PRIMARY
            try:
                with connections[source].cursor() as cursor:
                    cursor.execute("SELECT COALESCE(MAX(version), 0), COUNT(*) FROM scaling_shardplacement")
                    version = tuple(cursor.fetchone())
                    if force or version != self._version or self._placement is None:
                        cursor.execute("SELECT logical_shard, database FROM scaling_shardplacement")
                        stored = dict(cursor.fetchall())
                        self._placement = {**settings.HERD_SHARD_MAP, **stored}
                        self._version = version
            except DatabaseError as error:
                if source == PRIMARY and isinstance(error, CONNECTION_ERRORS):
                    primary_health.failed(PRIMARY)  # the next refresh reads a replica if it is away
                if self._placement is None:
                    self._placement = dict(settings.HERD_SHARD_MAP)
            self._checked_at = time.monotonic()

    def version(self) -> int:
        self.alias(0)
        return self._version[0] if self._version else 0


shard_map = ShardMap()


def alias_of_shard(logical_shard: int) -> str:
    return shard_map.alias(logical_shard)


def alias_of_user(user_id: int) -> str:
    return shard_map.alias(shard_of_user(user_id))


# --------------------------------------------------------------------------- writes


def _claim(alias: str, logical_shard: int) -> bool:
    """Lock this database's ownership row of the shard for the transaction; True if it owns it."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT owned FROM scaling_shardownership WHERE logical_shard = %s FOR SHARE", [logical_shard])
        row = cursor.fetchone()
    return bool(row and row[0])


@contextlib.contextmanager
def writing(logical_shard: int, *, savepoint: bool = True, attempts: int = 5) -> Iterator[str]:
    """One transaction on the database that owns ``logical_shard``; yields its alias.

    Its first statement locks the ownership row (``FOR SHARE``): a move waits for it to
    end, and a database that gave the shard away refuses before anything is written,
    so the map is re-read and the transaction opened where the shard lives now.
    ``transaction.on_commit`` callbacks for these writes take ``using=alias``. Nested in
    another ``writing`` block of the same shard, ``savepoint=False`` makes it part of
    that transaction: it fails, all fails.
    """
    for _attempt in range(attempts):
        alias = alias_of_shard(logical_shard)
        block = transaction.atomic(using=alias, savepoint=savepoint)
        block.__enter__()
        try:
            owned = _claim(alias, logical_shard)
        except BaseException:
            block.__exit__(*sys.exc_info())
            raise
        if owned:
            # Registered first, so it runs before the block's other callbacks (a socket
            # push that makes a browser read the new rows).
            transaction.on_commit(lambda alias=alias: record_write(alias, logical_shard), using=alias)
            break
        block.__exit__(None, None, None)
        shard_map.refresh(force=True)
    else:
        raise ShardMoved(f"logical shard {logical_shard} is owned by no database the shard map names")
    try:
        yield alias
    except BaseException:
        if not block.__exit__(*sys.exc_info()):
            raise
    else:
        block.__exit__(None, None, None)


def writing_for_user(user_id: int, *, savepoint: bool = True) -> contextlib.AbstractContextManager[str]:
    return writing(shard_of_user(user_id), savepoint=savepoint)


def _position_key(alias: str, logical_shard: int) -> str:
    # Per database as well: WAL positions of two database servers cannot be compared.
    return f"herd:lsn:shard:{alias}:{logical_shard}"


def record_write(alias: str, logical_shard: int) -> None:
    """After a commit on ``alias`` that wrote ``logical_shard``: its replica serves the
    shard's reads again only once it has replayed this."""
    if alias in settings.SHARD_REPLICAS and not consistency.raise_position(
        _position_key(alias, logical_shard), positions.current(alias)
    ):
        logger.warning("could not record a write to logical shard %s: reads of it may be stale", logical_shard)


# --------------------------------------------------------------------------- reads


def _position(alias: str, logical_shard: int) -> int | None:
    """The WAL position on ``alias`` a read of ``logical_shard`` must reach; None when it
    cannot be known (the state Redis, or ``alias`` itself, is down): then only ``alias``
    will do."""
    key = _position_key(alias, logical_shard)
    try:
        redis = get_redis_connection("state")
        value = redis.get(key)
        if value is None:
            # No write recorded (a new shard, or a state Redis that lost its data): every
            # commit so far, once; kept for good (1024 keys per database at most).
            if (current := primary_health.position(alias)) is None:
                return None
            redis.set(key, current, nx=True)
            value = redis.get(key)
    except RedisError:
        return None
    return int(value)


def read_alias(logical_shard: int) -> str:
    """Where a read of ``logical_shard`` goes: the replica of its database when that
    replica is healthy and has replayed every write made to the shard, else the database;
    while the database is unreachable, its replica if healthy (read-only mode)."""
    alias = alias_of_shard(logical_shard)
    replica = settings.SHARD_REPLICAS.get(alias)
    if replica is not None and consistency.read_only_replica(alias, [replica]) is not None:
        consistency.note_shard_replica_read(replica)
        return replica
    if replica is None or connections[alias].in_atomic_block or consistency.primary_required():
        return alias
    position = _position(alias, logical_shard)
    if position is None or not replica_health.is_healthy(replica, primary=alias):
        return alias
    if not consistency.has_replayed(replica, position, consistency.current_state()):
        return alias
    consistency.note_shard_replica_read(replica)
    return replica


class ShardedManager(models.Manager):
    """The manager of a sharded model: every query starts from a shard key."""

    def for_user(self, user_id: int) -> models.QuerySet:
        """The user's rows, on their shard: read where ``read_alias`` says, written on
        the shard's database (the router decides from the ``logical_shard`` hint)."""
        return self._on(shard_of_user(user_id)).filter(**{shard_key(self.model): user_id})

    def for_id(self, row_id: int) -> models.QuerySet:
        """The row ``row_id`` (at most one), on the shard its id names; none for a
        number that is not a row id (a mistyped or forged URL)."""
        if not is_row_id(row_id):
            return self._on(0).none()
        return self._on(shard_of_id(row_id)).filter(pk=row_id)

    def _on(self, logical_shard: int) -> models.QuerySet:
        return self.db_manager(hints={"logical_shard": logical_shard}).get_queryset()


def fan_out(function: Callable[[str], T]) -> dict[str, T]:
    """``function(alias)`` on every shard database, one after another: the explicit cross-shard read."""
    return {alias: function(alias) for alias in shard_aliases()}


def merged(
    model: type[models.Model], order_by: tuple[str, ...], limit: int, filters: dict | None = None
) -> list[models.Model]:
    """The first ``limit`` rows of ``model`` across every shard in ``order_by`` order (descending fields only)."""
    per_shard = fan_out(
        lambda alias: list(model.objects.using(alias).filter(**(filters or {})).order_by(*order_by)[:limit])
    )
    rows = [row for shard_rows in per_shard.values() for row in shard_rows]
    fields = [field.lstrip("-") for field in order_by]
    rows.sort(key=lambda row: tuple(getattr(row, field) for field in fields), reverse=order_by[0].startswith("-"))
    return rows[:limit]


# --------------------------------------------------------------------------- the router


def _alias_from_hints(model: type[models.Model], hints: dict) -> str | None:
    instance = hints.get("instance")
    if instance is None or not is_sharded(type(instance)):
        return None
    user_id = getattr(instance, shard_key(type(instance)), None)
    if user_id is not None:
        return alias_of_user(user_id)
    return instance._state.db


def _database_of(alias: str | None) -> str | None:
    """The shard database an alias reads: itself, or the one it is a replica of."""
    replicas = {replica: shard for shard, replica in settings.SHARD_REPLICAS.items()}
    return replicas.get(alias, alias)


class ShardRouter:
    """Sends sharded models to their shard; refuses them without a shard key.

    Placed before ``scaling.db.router.PrimaryReplicaRouter``, which decides for every
    other model (it sees no sharded model: this router answers or raises first).
    Migrations: sharded models (``on_shards``) and the ownership table on every shard
    database and nowhere else; the rest on the main primary only.
    """

    def _route(self, model: type[models.Model], hints: dict, write: bool) -> str | None:
        if not is_sharded(model):
            return None
        if (logical_shard := hints.get("logical_shard")) is not None:
            return alias_of_shard(logical_shard) if write else read_alias(logical_shard)
        alias = _alias_from_hints(model, hints)
        if alias is None:
            name = model.__name__
            raise ShardKeyMissing(
                f"{name} is sharded by {shard_key(model)}: query it with {name}.objects.for_user(user_id) or "
                f".for_id(id), or across shards with scaling.sharding.shards.fan_out(); this query named no shard."
            )
        return alias

    def db_for_read(self, model, **hints) -> str | None:
        return self._route(model, hints, write=False)

    def db_for_write(self, model, **hints) -> str | None:
        return self._route(model, hints, write=True)

    def allow_relation(self, obj1, obj2, **hints) -> bool | None:
        if is_sharded(type(obj1)) or is_sharded(type(obj2)):
            return _database_of(obj1._state.db) == _database_of(obj2._state.db)
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints) -> bool | None:
        shard_side = on_shards(app_label, model_name) or hints.get("shards")
        if db in settings.SHARD_DATABASES:
            return bool(shard_side)
        if shard_side:
            return False
        return None


# --------------------------------------------------------------------------- seeding


def seed_placement() -> None:
    """Store the configured map on the main primary, for logical shards it does not place yet."""
    from scaling.sharding.models import ShardPlacement

    ShardPlacement.objects.using(PRIMARY).bulk_create(
        [ShardPlacement(logical_shard=s, database=a, version=0) for s, a in settings.HERD_SHARD_MAP.items()],
        ignore_conflicts=True,
    )
    shard_map.refresh(force=True)


def seed_ownership(alias: str) -> None:
    """Give ``alias`` the ownership rows of the logical shards the map places on it."""
    from scaling.sharding.models import ShardOwnership

    shard_map.refresh(force=True)
    owned = [s for s, a in shard_map.placement().items() if a == alias]
    ShardOwnership.objects.using(alias).bulk_create(
        [ShardOwnership(logical_shard=s, owned=True) for s in owned], ignore_conflicts=True
    )


def seed_after_migrate(sender, using: str, **kwargs) -> None:
    """``post_migrate`` of the sharding app: the map on the primary, ownership on each shard."""
    if using == PRIMARY:
        seed_placement()
    elif using in settings.SHARD_DATABASES:
        seed_ownership(using)


def forget_user(sender, instance, **kwargs) -> None:
    """``post_delete`` of a user: once the deletion commits, their sharded rows go too."""
    user_id = instance.pk

    def delete_rows() -> None:
        with writing(shard_of_user(user_id)) as alias:
            for model in sharded_models():
                model.objects.using(alias).filter(**{shard_key(model): user_id}).delete()

    transaction.on_commit(delete_rows, using=kwargs.get("using") or PRIMARY)
