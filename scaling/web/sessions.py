"""Sessions in the state Redis that tell "no such session" from "the store is down".

Django's cache backend reads an unreachable session as an empty one, a silent logout;
this one raises, so the request ends on the clean 503 page and the visitor is logged
in as before once Redis is back.
"""

from __future__ import annotations

from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

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
