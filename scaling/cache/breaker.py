"""A circuit breaker for the cache Redis: after a call fails, each process skips it a while.

A call refused or timed out *after redis-py's own retries* (so not a pooled connection
that a restart broke) opens it, and so does a Redis that answers, but slowly: half of
the last ``SLOW_WINDOW`` calls slower than ``HERD_CACHE_SLOW_CALL_SECONDS``. Then
for ``HERD_CACHE_BREAKER_SECONDS`` (read at each call) every call raises
``CacheRedisSkipped``, a ``ConnectionError``, at once, which callers answer as a miss
(django-redis's ``IGNORE_EXCEPTIONS``; ``scaling.cache`` reads the database). Then one
call goes through as a probe: a prompt answer closes it; a failure or a slow answer opens it.

Why in the ``redis.Redis`` client (django-redis's ``REDIS_CLIENT_CLASS``, set on the
cache alias only) rather than a ``CLIENT_CLASS`` or the cache backend: ``scaling.cache``'s
hot path (the ``MGET``, the bump ``EVAL``) and pipelines use the raw client, which those
never see; every call to this Redis passes here. The client is one per process
(``redis_clients.SharedClientFactory``), and so is its breaker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from django.conf import settings
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scaling.ops import metrics

logger = logging.getLogger(__name__)

# What says the Redis is away (after redis-py's retries); anything else it answered.
_FAILURES = (RedisConnectionError, RedisTimeoutError, OSError)
# How many recent calls the slow-call rule looks at: half of them slow opens the breaker.
# A lone slow call (a pause of this process) never does.
SLOW_WINDOW = 20


class CacheRedisSkipped(RedisConnectionError):
    """Not sent: the breaker is open after a recent failure."""


class CacheRedisSlow(RedisTimeoutError):
    """Not raised: what opened the breaker when the Redis answered, but slowly."""


class CircuitBreaker:
    """Closed (calls go through), open (refused at once), or half-open (one probe out)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._opened_at: float | None = None  # time.monotonic(); None while closed
        self._probing = False
        self._error = ""
        self._slow: deque[bool] = deque(maxlen=SLOW_WINDOW)  # recent calls: True if slow

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._allow():
            metrics.count_cache_redis_call("skipped")
            raise CacheRedisSkipped(f"{self.name} skipped after a failure: {self._error}")
        metrics.count_cache_redis_call("sent")
        failure: BaseException | None = None
        started = time.monotonic()
        try:
            return function(*args, **kwargs)
        except _FAILURES as error:
            failure = error
            raise
        finally:
            if failure is None and self._is_slow(time.monotonic() - started):
                failure = CacheRedisSlow(
                    f"slower than {settings.HERD_CACHE_SLOW_CALL_SECONDS:g} s: half of its last calls, or its probe"
                )
            self._settle(failure)

    def _is_slow(self, seconds: float) -> bool:
        """Whether the Redis counts as slow after a call that took ``seconds``: half of the
        recent calls slow, or a probe slow (no lock on a prompt call while closed)."""
        slow = seconds > settings.HERD_CACHE_SLOW_CALL_SECONDS
        self._slow.append(slow)
        if not slow:
            return False
        if self._opened_at is not None:  # the probe
            return True
        return self._slow.count(True) * 2 >= SLOW_WINDOW

    def reset(self) -> None:
        """Closed, as if the last call had succeeded, with no slow calls remembered."""
        self._slow.clear()
        self._settle(None)

    def _allow(self) -> bool:
        if self._opened_at is None:  # closed: no lock on the way to a healthy Redis
            return True
        with self._lock:
            if self._opened_at is None:
                return True
            if self._probing or time.monotonic() - self._opened_at < settings.HERD_CACHE_BREAKER_SECONDS:
                return False
            self._probing = True  # half-open: this call is the probe
            return True

    def _settle(self, failure: BaseException | None) -> None:
        if failure is None:
            if self._opened_at is None:  # closed (a probe is only out while open)
                return
            with self._lock:
                was_open, self._opened_at, self._probing = self._opened_at is not None, None, False
            if was_open:
                metrics.cache_breaker_open(False)
                logger.info("%s answers again: calls go through", self.name)
            return
        with self._lock:
            was_open, self._opened_at, self._probing = self._opened_at is not None, time.monotonic(), False
            self._error = str(failure)
            self._slow.clear()
        metrics.count_cache_redis_call("slow" if isinstance(failure, CacheRedisSlow) else "failed")
        metrics.cache_breaker_open(True)
        if not was_open:
            logger.warning(
                "%s failed (%s): skipped for %g s at a time until it answers",
                self.name,
                failure,
                settings.HERD_CACHE_BREAKER_SECONDS,
            )


class BreakerRedis(Redis):
    """``redis.Redis`` whose commands and pipelines go through ``self.breaker``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.breaker = CircuitBreaker("the cache Redis")

    def execute_command(self, *args: Any, **options: Any) -> Any:
        return self.breaker.call(super().execute_command, *args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        pipe = BreakerPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.breaker = self.breaker
        return pipe


class BreakerPipeline(Pipeline):
    breaker: CircuitBreaker

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return self.breaker.call(super().execute, raise_on_error)
        except CacheRedisSkipped:
            self.reset()  # as a failed execute leaves it: no commands queued
            raise
