"""Throttling per token scope (rates in settings: uploads / read / write / review / admin).

Counted per token for token requests and per user for browser sessions, in the default cache
(Redis in production, so every gunicorn worker shares the counts). Each scope and caller has a
fixed-window counter incremented atomically (DRF's built-in throttles read and rewrite a list of
timestamps, which concurrent workers can overwrite). Throttling limits load; it is not a security
boundary.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle

from diagnosis.api.permissions import request_token


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
        try:
            count = self.cache.incr(key)
        except ValueError:  # first request of the window
            count = 1 if self.cache.add(key, 1, self.duration + 1) else self.cache.incr(key)
        self.wait_seconds = self.duration - (now % self.duration)
        return count <= self.num_requests

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
