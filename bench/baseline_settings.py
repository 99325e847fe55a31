"""Herd's app as a competent team would deploy it without Herd, for bench/baseline.py only.

Tuned as Django's documentation advises for one server: one PostgreSQL (no read replicas:
the launcher empties ``DATABASE_REPLICA_URLS`` and ``SHARD_REPLICA_URLS``) with persistent
connections (``CONN_MAX_AGE``), Redis as Django's cache (django-redis, its defaults),
``cached_db`` sessions, and ``cache_page`` on the anonymous catalog pages
(``bench.baseline_urls``, ``BENCH_BASELINE_CACHE_SECONDS``). None of Herd's caching
mechanisms: no query or object cache (``HERD_CACHES_ENABLED`` off), no early answer of
warm anonymous pages, no shared Redis clients; HAProxy's edge cache is bypassed by the
load itself.
"""

import os

from config.settings import *  # noqa: F403
from config.settings import CACHES, DATABASES, MIDDLEWARE, REDIS_CACHE_URL

ROOT_URLCONF = "bench.baseline_urls"

# Persistent connections, as Django's "Databases" notes advise (checked before reuse).
DATABASES = {alias: {**database, "CONN_MAX_AGE": 600} for alias, database in DATABASES.items()}

CACHES = {
    **CACHES,
    "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_CACHE_URL, "KEY_PREFIX": "baseline"},
}
DJANGO_REDIS_CONNECTION_FACTORY = "django_redis.pool.ConnectionFactory"
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_CACHE_ALIAS = "default"

HERD_CACHES_ENABLED = False
MIDDLEWARE = [name for name in MIDDLEWARE if name != "scaling.web.edge.AnonymousPageMiddleware"]

# How long cache_page keeps an anonymous catalog page: a minute, a common choice for a
# catalog whose prices and reviews change during the day.
BASELINE_CACHE_SECONDS = int(os.environ.get("BENCH_BASELINE_CACHE_SECONDS", "60"))
