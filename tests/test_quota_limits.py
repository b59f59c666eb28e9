"""The ingress's rate limiter and connection slots on their own (no server)."""

from __future__ import annotations

import time

import pytest

from serve_app.errors import ApiError
from serve_app.quotas import ConnectionSlots, RateLimiter, connection_share, share


def test_a_token_bucket_allows_the_rate_and_says_when_to_retry():
    limiter = RateLimiter()
    limiter.acquire(1, 2.0)
    limiter.acquire(1, 2.0)  # a burst of one second's worth
    with pytest.raises(ApiError) as refused:
        limiter.acquire(1, 2.0)
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "1"}
    limiter.acquire(2, 2.0)  # another service has its own bucket
    time.sleep(0.55)
    limiter.acquire(1, 2.0)


def test_a_slow_rate_asks_for_a_longer_wait():
    limiter = RateLimiter()
    limiter.acquire(1, 0.2)
    with pytest.raises(ApiError) as refused:
        limiter.acquire(1, 0.2)
    assert refused.value.headers == {"Retry-After": "5"}


def test_connection_slots_per_owner_and_per_replica():
    slots = ConnectionSlots(per_replica=3)
    first = slots.acquire(7, owner_limit=1)
    with pytest.raises(ApiError) as owner_full:
        slots.acquire(7, owner_limit=1)
    assert owner_full.value.status == 429 and owner_full.value.code == 32
    others = [slots.acquire(None, None), slots.acquire(8, 5)]
    with pytest.raises(ApiError) as replica_full:
        slots.acquire(9, 5)
    assert replica_full.value.status == 429 and "Retry-After" in replica_full.value.headers
    first()
    first()  # releasing twice frees one slot only
    slots.acquire(7, owner_limit=1)
    with pytest.raises(ApiError):
        slots.acquire(9, 5)
    for release in others:
        release()


def test_limits_are_shared_among_replicas():
    assert share(10, 2) == 5 and share(10, 1) == 10
    assert connection_share(3, 2) == 2 and connection_share(1, 4) == 1 and connection_share(0, 2) == 0
