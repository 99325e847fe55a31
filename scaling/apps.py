from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _watch_primary_writes(sender, connection, **kwargs) -> None:
    """Every statement on the primary passes ``scaling.cache.versions.watch_writes``."""
    from scaling.cache.versions import watch_writes
    from scaling.db.replicas import PRIMARY

    if connection.alias == PRIMARY and watch_writes not in connection.execute_wrappers:
        connection.execute_wrappers.append(watch_writes)


def _count_statements(sender, connection, **kwargs) -> None:
    """Every statement on every alias is counted (``scaling.ops.metrics``)."""
    from scaling.ops.metrics import count_statements

    if count_statements not in connection.execute_wrappers:
        connection.execute_wrappers.append(count_statements)


def _watch_primary_statements(sender, connection, **kwargs) -> None:
    """Connections to a primary are watched, and broken once it is found cut off (``scaling.db.stuck``)."""
    from scaling.db.stuck import watch

    watch(sender, connection, **kwargs)


class ScalingConfig(AppConfig):
    name = "scaling"
    verbose_name = "Scaling mechanisms"

    def ready(self) -> None:
        connection_created.connect(_watch_primary_writes, dispatch_uid="herd-watch-primary-writes")
        connection_created.connect(_count_statements, dispatch_uid="herd-count-statements")
        connection_created.connect(_watch_primary_statements, dispatch_uid="herd-watch-primary-statements")
