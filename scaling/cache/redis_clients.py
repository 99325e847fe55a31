"""One Redis client per server and process, shared by every request.

Django makes a new cache backend for every request context, and a replica runs each
request in a fresh one (``a2wsgi``, like Django's own ASGI handler), so django-redis's
stock factory built a new ``redis.Redis`` for every request that touched Redis: about
270 µs of CPU each, on a warm page whose whole Redis round trip costs about 80
(figures in docs/PERFORMANCE.md). django-redis already keeps the connection pools
process-wide; this factory keeps the clients too. A ``redis.Redis`` is safe to share
between threads: each command borrows a connection from the pool.
``SharedSentinelClientFactory`` does the same for a Redis found through Sentinel (the
state Redis when ``REDIS_STATE_SENTINELS`` is set): its pool asks the Sentinels for the
primary on each new connection, so after a failover the next connections reach the new one.
"""

from __future__ import annotations

import threading
from typing import Any

from django_redis.pool import ConnectionFactory, SentinelConnectionFactory
from redis import Redis


class SharedClientFactory(ConnectionFactory):
    _clients: dict[str, Redis] = {}  # process-wide, like ConnectionFactory._pools
    _lock = threading.Lock()

    def get_connection(self, params: dict[str, Any]) -> Redis:
        key = params["url"]
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key) or self._clients.setdefault(key, super().get_connection(params))
        return client


class SharedSentinelClientFactory(SharedClientFactory, SentinelConnectionFactory):
    pass
