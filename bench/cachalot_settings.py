"""Herd's settings plus django-cachalot, for ``bench/querycache.py`` only.

Not used by any replica: Herd's own query cache is ``scaling.cache.queries.cached_query``.
This module exists to measure django-cachalot 2.9.x beside it on the same queries,
configured the way cachalot's documentation says to run it with a read replica:

- ``CACHALOT_DATABASES`` names the primary and every replica alias, so reads that
  Herd's router (``scaling.db.router.PrimaryReplicaRouter``, still active) sends to a
  replica are cached too. Cachalot keys its table invalidation timestamps by database
  alias: a write on ``default`` invalidates ``default``'s entries only.
- Its "Replication server" advice (docs/limits.rst): a ``post_invalidation``
  receiver that, when ``default`` is invalidated, invalidates the same tables for the
  replica aliases. This is what ``_invalidate_replicas`` below does. It still leaves
  the race DESIGN.md describes: the replica's entries are invalidated at the
  primary's commit, and the next reader refills them from a replica that may not have
  replayed that commit yet; that stale entry then stays until the next write to the
  table (``CACHALOT_TIMEOUT = None``, the default).
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
