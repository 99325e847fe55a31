from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _watch_primary_writes(sender, connection, **kwargs) -> None:
    """Every statement on the primary passes ``scaling.cache.watch_writes``."""
    from scaling.cache import watch_writes
    from scaling.replicas import PRIMARY

    if connection.alias == PRIMARY and watch_writes not in connection.execute_wrappers:
        connection.execute_wrappers.append(watch_writes)


def _count_statements(sender, connection, **kwargs) -> None:
    """Every statement on every alias is counted (``scaling.metrics``)."""
    from scaling.metrics import count_statements

    if count_statements not in connection.execute_wrappers:
        connection.execute_wrappers.append(count_statements)


class ScalingConfig(AppConfig):
    name = "scaling"
    verbose_name = "Scaling mechanisms"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.models.signals import post_delete, post_migrate

        from scaling import shards

        connection_created.connect(_watch_primary_writes, dispatch_uid="herd-watch-primary-writes")
        # The shard map on the primary and the ownership rows on each shard, after migrate.
        post_migrate.connect(shards.seed_after_migrate, sender=self, dispatch_uid="herd-seed-shards")
        # Sharded rows have no foreign key to their user: deleting a user deletes them here.
        post_delete.connect(shards.forget_user, sender=settings.AUTH_USER_MODEL, dispatch_uid="herd-forget-user")
        connection_created.connect(_count_statements, dispatch_uid="herd-count-statements")
