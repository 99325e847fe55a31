"""Sessions in the state Redis that tell "no such session" from "the store is down".

Django's cache session backend reads a session that cannot be fetched as an empty one:
while the state Redis restarts, every logged-in visitor would silently look logged
out (redirected to the log-in page, or shown anonymous pages), and a socket's session
re-check would close the socket for good. This backend raises instead when Redis is
unreachable: the request ends on the clean 503 page of ``scaling.web.views.server_error``
("try again in a few seconds"), the socket is closed with "try again", and once Redis
is back (its append-only file kept every session) the visitor is logged in as before.
Other errors while reading (a malformed key) still mean an empty session, as in Django.
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
