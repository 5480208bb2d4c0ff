"""Rate limits on the routes that take tickets (purchase, hold, confirm): per user and per client IP.

A request over a limit is answered 429 ``rate_limited`` with ``Retry-After`` (whole seconds until
the window lets the next request through) and writes nothing. The per-IP limit is checked before
the token is verified (it also shields the token check), the per-user limit right after it.

The counting is the ``limits`` library's moving window (exact: at most N requests in any window of
the period). Its storage is a ``limits`` storage URI: ``memory://`` (the default) keeps the counts
in the process, so each API instance (Cloud Run instance, uvicorn worker) counts on its own and N
instances let through up to N times the limit; ``redis://host:port`` (Memorystore) shares them
across instances (needs the ``redis`` client package, not pinned here: this project runs no
Redis). docs/decisions.md says why Firestore is not the store.

Settings (environment, read by ``RateLimits.from_env``):

    BOXOFFICE_RATE_LIMIT_PER_USER   limits strings, ';'-separated, or "off" (default 5/second;30/minute)
    BOXOFFICE_RATE_LIMIT_PER_IP     likewise (default 20/second;600/minute)
    BOXOFFICE_RATE_LIMIT_STORAGE    a limits storage URI (default memory://)
    BOXOFFICE_TRUSTED_PROXY_HOPS    proxies in front of the API that append to X-Forwarded-For
                                    (default 0: the TCP peer is the client; Cloud Run: 1)
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from boxoffice.api.problems import ApiProblem

OFF = "off"
DEFAULT_PER_USER = "5/second;30/minute"
DEFAULT_PER_IP = "20/second;600/minute"
DEFAULT_STORAGE = "memory://"


def _items(spec: str) -> tuple[RateLimitItem, ...]:
    spec = spec.strip()
    return () if spec.lower() == OFF or not spec else tuple(parse_many(spec))


@dataclass(frozen=True)
class RateLimits:
    """What is limited and where the counts live. Empty ``per_user``/``per_ip``: not limited."""

    per_user: tuple[RateLimitItem, ...]
    per_ip: tuple[RateLimitItem, ...]
    storage: str = DEFAULT_STORAGE
    proxy_hops: int = 0

    @classmethod
    def parse(cls, per_user: str = DEFAULT_PER_USER, per_ip: str = DEFAULT_PER_IP,
              storage: str = DEFAULT_STORAGE, proxy_hops: int = 0) -> RateLimits:
        """Limits from strings such as ``"5/second;30/minute"`` (``"off"``: none). Raises ValueError."""
        if proxy_hops < 0:
            raise ValueError("proxy hops must be 0 or more")
        return cls(_items(per_user), _items(per_ip), storage, proxy_hops)

    @classmethod
    def off(cls) -> RateLimits:
        return cls((), ())

    @classmethod
    def from_env(cls) -> RateLimits:
        env = os.environ
        return cls.parse(env.get("BOXOFFICE_RATE_LIMIT_PER_USER", DEFAULT_PER_USER),
                         env.get("BOXOFFICE_RATE_LIMIT_PER_IP", DEFAULT_PER_IP),
                         env.get("BOXOFFICE_RATE_LIMIT_STORAGE", DEFAULT_STORAGE),
                         int(env.get("BOXOFFICE_TRUSTED_PROXY_HOPS", "0")))


class RateLimiter:
    """Counts requests against ``RateLimits`` in the configured storage."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._window = MovingWindowRateLimiter(storage_from_string(limits.storage))

    def check_ip(self, request: Request) -> None:
        self._check(self.limits.per_ip, "ip", client_ip(request, self.limits.proxy_hops),
                    "too many requests from your network")

    def check_user(self, uid: str) -> None:
        self._check(self.limits.per_user, "user", uid, "too many requests from your account")

    def _check(self, items: tuple[RateLimitItem, ...], kind: str, who: str, what: str) -> None:
        for item in items:
            if not self._window.hit(item, kind, who):
                reset_at = self._window.get_window_stats(item, kind, who).reset_time
                wait = max(1, math.ceil(reset_at - time.time()))
                raise ApiProblem(429, "rate_limited",
                                 f"{what} (at most {item}); try again in {wait} s",
                                 {"Retry-After": str(wait)})


def client_ip(request: Request, proxy_hops: int) -> str:
    """The client's address: the TCP peer, or with ``proxy_hops`` trusted proxies in front, the
    address the outermost of them saw (the ``proxy_hops``-th X-Forwarded-For entry from the right;
    entries further left are the client's own claims and are ignored)."""
    peer = request.client.host if request.client else "unknown"
    if proxy_hops <= 0:
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    return hops[-proxy_hops] if len(hops) >= proxy_hops else peer
