"""Herd's settings plus django-cachalot, for ``bench.querycache`` only.

django-cachalot 2.9 configured as its documentation says for a read replica:
``CACHALOT_DATABASES`` names every alias, and a ``post_invalidation`` receiver
invalidates the replicas' entries when the primary's are (its "Replication server"
advice). The race this leaves is measured and explained in docs/CACHING.md.
"""

from cachalot.signals import post_invalidation

from config.settings import *  # noqa: F403
from config.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "cachalot"]

CACHALOT_ENABLED = True
CACHALOT_CACHE = "default"  # the "cache" Redis, as cachalot's limits page advises for Redis
CACHALOT_DATABASES = sorted(DATABASES)  # "default" and "replica1".."replicaN"
# cachalot's default is None (until invalidated or evicted); the herd's cache Redis
# evicts only keys with a time to live (volatile-lru), so give them one.
CACHALOT_TIMEOUT = 3600

_PRIMARY = "default"
_REPLICAS = [alias for alias in DATABASES if alias != _PRIMARY]


def _invalidate_replicas(sender: str, **kwargs) -> None:
    """Cachalot's documented fix for replicas: invalidate them whenever the primary is."""
    if kwargs.get("db_alias") != _PRIMARY:
        return
    from cachalot.api import invalidate

    for alias in _REPLICAS:
        invalidate(sender, db_alias=alias, cache_alias=CACHALOT_CACHE)


post_invalidation.connect(_invalidate_replicas, dispatch_uid="bench-cachalot-invalidate-replicas")
