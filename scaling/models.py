from django.db import models


class StoredFile(models.Model):
    """One file in the shared database storage (``scaling.storage.DatabaseStorage``)."""

    name = models.CharField(max_length=255, primary_key=True)
    content = models.BinaryField()
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class ShardPlacement(models.Model):
    """One entry of the shard map: which database holds a logical shard (``scaling.shards``).

    Lives on the main primary; seeded from ``HERD_SHARD_MAP`` by ``migrate`` and changed
    only by ``manage.py shards move``, which raises ``version`` above every other.
    """

    logical_shard = models.PositiveSmallIntegerField(primary_key=True)
    database = models.CharField(max_length=64)
    version = models.BigIntegerField(default=0, db_index=True)
    moved_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"logical shard {self.logical_shard} on {self.database}"


class ShardOwnership(models.Model):
    """In every shard database: whether it owns a logical shard now (``scaling.shards.writing``).

    Writers lock their shard's row ``FOR SHARE``; a move takes it ``FOR UPDATE`` (waiting
    for writers in flight) and flips ``owned``, so no write lands on a database after
    its copy of the shard is final.
    """

    logical_shard = models.PositiveSmallIntegerField(primary_key=True)
    owned = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"logical shard {self.logical_shard}: {'owned' if self.owned else 'not owned'}"
