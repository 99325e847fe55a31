from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _watch_primary_writes(sender, connection, **kwargs) -> None:
    """Every statement on the primary passes ``scaling.cache.watch_writes``."""
    from scaling.cache import watch_writes
    from scaling.replicas import PRIMARY

    if connection.alias == PRIMARY and watch_writes not in connection.execute_wrappers:
        connection.execute_wrappers.append(watch_writes)


class ScalingConfig(AppConfig):
    name = "scaling"
    verbose_name = "Scaling mechanisms"

    def ready(self) -> None:
        connection_created.connect(_watch_primary_writes, dispatch_uid="herd-watch-primary-writes")
