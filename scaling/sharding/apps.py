from django.apps import AppConfig


class ShardingConfig(AppConfig):
    name = "scaling.sharding"
    label = "sharding"
    verbose_name = "Sharding"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.models.signals import post_delete, post_migrate

        from scaling.sharding import shards

        # The shard map on the primary and the ownership rows on each shard, after migrate.
        post_migrate.connect(shards.seed_after_migrate, sender=self, dispatch_uid="herd-seed-shards")
        # Sharded rows have no foreign key to their user: deleting a user deletes them here.
        post_delete.connect(shards.forget_user, sender=settings.AUTH_USER_MODEL, dispatch_uid="herd-forget-user")
