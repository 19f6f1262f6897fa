"""Throttling per token scope (rates in settings: uploads / read / write / review / admin).

Counted per token for token requests and per user for browser sessions, in the default cache
(Redis in production, so every gunicorn worker shares the counts). Each scope and caller has a
fixed-window counter incremented atomically (DRF's built-in throttles read and rewrite a list of
timestamps, which concurrent workers can overwrite). Throttling limits load; it is not a security
boundary.

With Redis the count is one round trip: a server-side script increments the counter and sets
its expiry on the first count. Through Django's cache API it was two (`incr` asks EXISTS first)
and 0.59 ms of CPU per request, mostly building a redis client per call; with the script on a
client kept per cache instance it is 0.09 ms.

The cache is a database of the broker's Redis. While it is unreachable the throttle lets requests
through (logged once a minute): an upload is accepted and queued as the web form's is, never a
500 (tests/integration/test_redis_outage.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from weakref import WeakKeyDictionary

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache
from redis.commands.core import Script
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle

from diagnosis.api.permissions import request_token

logger = logging.getLogger(__name__)

# Atomic: INCR, and the first count of a window gives the key its time to live.
_COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
_count_scripts: WeakKeyDictionary[RedisCache, Script] = WeakKeyDictionary()


def _count_script(cache: RedisCache) -> Script:
    """The counting script bound to a client of this cache's pool (one per cache instance:
    redis-py's `Script` runs it by hash and reloads it if the server lost it)."""
    script = _count_scripts.get(cache)
    if script is None:
        client = cache._cache.get_client(write=True)
        script = _count_scripts[cache] = client.register_script(_COUNT_SCRIPT)
    return script


_outage_logged_at = 0.0


def _log_outage(scope: str) -> None:
    """One warning per minute and process while the cache is unreachable, not one per request."""
    global _outage_logged_at
    now = time.monotonic()
    if now - _outage_logged_at >= 60:
        _outage_logged_at = now
        logger.warning(
            "throttle: cache unreachable, requests not throttled", extra={"scope": scope}
        )


class TokenScopeRateThrottle(ScopedRateThrottle):
    def allow_request(self, request: Request, view: Any) -> bool:
        self.scope = view.throttle_scope_for_action()
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        now = self.timer()
        window = int(now // self.duration)
        key = f"{self.get_cache_key(request, view)}:{window}"
        self.wait_seconds = self.duration - (now % self.duration)
        try:
            count = self._count(key, ttl=self.duration + 1)
        except (RedisError, OSError):
            # The cache is the broker's Redis: while it is down, requests go through unthrottled
            # (throttling limits load; uploads are accepted and queued for the sweeper) rather
            # than failing with a 500.
            _log_outage(self.scope)
            return True
        return count <= self.num_requests

    def _count(self, key: str, *, ttl: int) -> int:
        """Add one to the window's counter (created with a time to live) and return it."""
        cache = caches[DEFAULT_CACHE_ALIAS]  # the backend behind DRF's `self.cache` proxy
        if isinstance(cache, RedisCache):
            # A plain integer, as Django's RedisCache stores ints: its get/incr read it too.
            return int(_count_script(cache)(keys=[cache.make_and_validate_key(key)], args=[ttl]))
        try:
            return cache.incr(key)
        except ValueError:  # first request of the window
            return 1 if cache.add(key, 1, ttl) else cache.incr(key)

    def wait(self) -> float:
        return self.wait_seconds

    def get_cache_key(self, request: Request, view: Any) -> str:
        token = request_token(request)
        if token is not None:
            ident = f"token:{token.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
