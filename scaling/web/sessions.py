"""Sessions in the state Redis that tell "no such session" from "the store is down".

Django's cache backend reads an unreachable session as an empty one, a silent logout;
this one raises, so the request ends on the clean 503 page and the visitor is logged
in as before once Redis is back.

With ``HERD_SESSION_REPLICAS`` (the state Redis under Sentinel), a save is answered only
once that many replicas have it (``WAIT``, on the connection that wrote it), so a failover
right after a log-in loses no session. A save that no connected replica acknowledged in
``HERD_SESSION_REPLICA_WAIT_MS`` raises (``SessionNotReplicated``: the 503 page, try
again); with no replica connected at all there is nothing a failover could promote, and
the save stands.
"""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class SessionNotReplicated(RedisError):
    """A replica is connected, but did not acknowledge the save in time."""


STORE_DOWN = (RedisError, ConnectionInterrupted)


class SessionStore(CacheSessionStore):
    def load(self) -> dict:
        try:
            session_data = self._cache.get(self.cache_key)
        except STORE_DOWN:
            raise
        except Exception:
            session_data = None
        return self._loaded(session_data)

    async def aload(self) -> dict:
        try:
            session_data = await self._cache.aget(await self.acache_key())
        except STORE_DOWN:
            raise
        except Exception:
            session_data = None
        return self._loaded(session_data)

    def _loaded(self, session_data: dict | None) -> dict:
        if session_data is not None:
            return session_data
        self._session_key = None
        return {}

    def save(self, must_create: bool = False) -> None:
        replicas = settings.HERD_SESSION_REPLICAS
        if not replicas:
            return super().save(must_create)
        if self.session_key is None:
            return self.create()
        client = self._cache.client  # django-redis: its key and encoding, one connection
        key = client.make_key(self.cache_key)
        redis = client.get_client(write=True)
        if not must_create and not redis.exists(key):
            raise UpdateError
        pipeline = redis.pipeline(transaction=False)
        value = client.encode(self._get_session(no_load=must_create))
        pipeline.set(key, value, ex=self.get_expiry_age(), nx=must_create)
        pipeline.execute_command("WAIT", replicas, settings.HERD_SESSION_REPLICA_WAIT_MS)
        written, acknowledged = pipeline.execute()
        if must_create and not written:
            raise CreateError
        if acknowledged < replicas and redis.info("replication").get("connected_slaves", 0):
            raise SessionNotReplicated(f"{acknowledged} of {replicas} replicas acknowledged the session")
        if acknowledged < replicas:
            logger.warning("session saved with no replica of the state Redis connected")

    async def asave(self, must_create: bool = False) -> None:
        await sync_to_async(self.save)(must_create)
