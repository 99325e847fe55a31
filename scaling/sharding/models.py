"""The shard map and each shard database's ownership rows (``scaling.sharding.shards``)."""

from django.db import models


class ShardPlacement(models.Model):
    """One entry of the shard map: which database holds a logical shard (``scaling.sharding.shards``).

    Lives on the main primary; seeded from ``HERD_SHARD_MAP`` by ``migrate`` and changed
    only by ``manage.py shards move``, which raises ``version`` above every other.
    """

    logical_shard = models.PositiveSmallIntegerField(primary_key=True)
    database = models.CharField(max_length=64)
    version = models.BigIntegerField(default=0, db_index=True)
    moved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "scaling_shardplacement"  # made by the scaling app's migrations, before sharding was an app

    def __str__(self) -> str:
        return f"logical shard {self.logical_shard} on {self.database}"


class ShardOwnership(models.Model):
    """In every shard database: whether it owns a logical shard now (``scaling.sharding.shards.writing``).

    Writers lock their shard's row ``FOR SHARE``; a move takes it ``FOR UPDATE`` (waiting
    for writers in flight) and flips ``owned``, so no write lands on a database after
    its copy of the shard is final.
    """

    logical_shard = models.PositiveSmallIntegerField(primary_key=True)
    owned = models.BooleanField(default=False)

    class Meta:
        db_table = "scaling_shardownership"

    def __str__(self) -> str:
        return f"logical shard {self.logical_shard}: {'owned' if self.owned else 'not owned'}"
