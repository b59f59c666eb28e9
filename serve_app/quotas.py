"""Quotas and rate limits of services, enforced by each ingress replica.

Several replicas share one service's limits without talking to each other: each replica allows
``1 / FACES_INGRESS_REPLICAS`` of the service's requests per second and of its live-event (SSE)
connections. HAProxy (or Serve's proxy) spreads requests over the replicas one by one, least
connections first, so a service's traffic reaches each replica in about equal parts and the replicas
together allow about the configured total; a client that is refused gets 429 with ``Retry-After``.
Quotas are read from PostgreSQL and kept for :data:`QUOTA_CACHE_S` seconds per replica: a change
through the admin API holds at once on the replica that made it and within that time on the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from serve_app.errors import QUOTA_EXCEEDED, RATE_LIMITED, ApiError
from store.quotas import QuotaStore

QUOTA_CACHE_S = 5.0
SLOT_RETRY_AFTER_S = 5


@dataclass(frozen=True)
class Quotas:
    requests_per_s: float
    faces: int
    streams: int
    sse_connections: int
    event_media_bytes: int
    sightings: int


class QuotaCache:
    """A service's quotas (its overrides over the platform's defaults), cached per replica."""

    def __init__(self, defaults: dict[str, float | int]):
        self.defaults = defaults
        self._cached: dict[int, tuple[float, Quotas]] = {}

    async def get(self, store: QuotaStore, service_id: int) -> Quotas:
        now = time.monotonic()
        cached = self._cached.get(service_id)
        if cached is None or now - cached[0] > QUOTA_CACHE_S:
            cached = (now, Quotas(**{**self.defaults, **await store.overrides(service_id)}))
            self._cached[service_id] = cached
        return cached[1]

    def forget(self, service_id: int) -> None:
        self._cached.pop(service_id, None)


class RateLimiter:
    """A token bucket per service: ``rate`` requests per second on average, bursts of one second's worth."""

    def __init__(self):
        self._buckets: dict[int, tuple[float, float]] = {}  # service -> (tokens, at)

    def acquire(self, service_id: int, rate: float) -> None:
        """Take one request's token, or raise a 429 saying when the next one is due."""
        now = time.monotonic()
        capacity = max(1.0, rate)
        tokens, at = self._buckets.get(service_id, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[service_id] = (tokens, now)
            retry_after = max(1, math.ceil((1.0 - tokens) / rate))
            raise ApiError(429, f"rate limit of this service reached; retry in {retry_after} s", RATE_LIMITED,
                           headers={"Retry-After": str(retry_after)})
        self._buckets[service_id] = (tokens - 1.0, now)


class ConnectionSlots:
    """Concurrent long-lived connections (SSE): a limit per service and one for the whole replica."""

    def __init__(self, per_replica: int):
        self.per_replica = per_replica
        self._open: dict[int | None, int] = {}

    def acquire(self, owner: int | None, owner_limit: int | None) -> Callable[[], None]:
        """A slot for ``owner`` (a service id, None for the admin), or a 429 when none is free.

        Returns the slot's release, which may be called more than once.
        """
        if sum(self._open.values()) >= self.per_replica:
            raise ApiError(429, "this ingress replica holds as many live-event connections as it may; retry "
                                "later", RATE_LIMITED, headers={"Retry-After": str(SLOT_RETRY_AFTER_S)})
        if owner_limit is not None and self._open.get(owner, 0) >= owner_limit:
            raise ApiError(429, f"this service may hold {owner_limit} live-event connection(s) per ingress "
                                "replica; close one first", QUOTA_EXCEEDED,
                           headers={"Retry-After": str(SLOT_RETRY_AFTER_S)})
        self._open[owner] = self._open.get(owner, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._open[owner] -= 1

        return release


def share(total: float, replicas: int) -> float:
    """One replica's share of a rate ``total``."""
    return total / max(1, replicas)


def connection_share(total: int, replicas: int) -> int:
    """One replica's share of ``total`` connections; a service allowed any gets at least one per replica."""
    return 0 if total == 0 else max(1, math.ceil(total / max(1, replicas)))
