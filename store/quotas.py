"""Quotas and rate limits per service (``service_quotas``), and the usage they are checked against.

A service's row holds only what the admin set; a missing value means the platform's default, which
the serving layer fills in (``faces_settings.Settings.default_quotas``).

Errors: :class:`~store.errors.NotFound` for an unknown service.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import asyncpg

from store.errors import InvalidValue, NotFound

QUOTA_NAMES = ("requests_per_s", "faces", "streams", "sse_connections", "event_media_bytes", "sightings")


class CachedUsage:
    """Per service, a usage read from PostgreSQL at most every ``refresh_s`` seconds, plus what this
    process added since (what other processes add shows at the next read)."""

    def __init__(self, refresh_s: float):
        self.refresh_s = refresh_s
        self._usage: dict[int, tuple[float, int]] = {}  # service -> (read at, usage)

    async def get(self, service_id: int, read: Callable[[], Awaitable[int]]) -> int:
        cached = self._usage.get(service_id)
        if cached is None or time.monotonic() - cached[0] > self.refresh_s:
            cached = (time.monotonic(), await read())
            self._usage[service_id] = cached
        return cached[1]

    def add(self, service_id: int, amount: int) -> None:
        if service_id in self._usage:
            read_at, usage = self._usage[service_id]
            self._usage[service_id] = (read_at, usage + amount)


class QuotaStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def overrides(self, service_id: int) -> dict[str, float | int]:
        """The quotas the admin set for the service (the others are defaults)."""
        row = await self.pool.fetchrow(
            f"SELECT s.id, {', '.join('q.' + n for n in QUOTA_NAMES)} FROM services s "
            "LEFT JOIN service_quotas q ON q.service_id = s.id WHERE s.id = $1", service_id)
        if row is None:
            raise NotFound(f"service {service_id} not found")
        return {name: row[name] for name in QUOTA_NAMES if row[name] is not None}

    async def set(self, service_id: int, values: dict[str, float | int | None]) -> dict[str, float | int]:
        """Set some quotas (None: back to the default); returns the service's overrides."""
        unknown = set(values) - set(QUOTA_NAMES)
        if unknown:
            raise InvalidValue(f"unknown quotas: {', '.join(sorted(unknown))}")
        await self.overrides(service_id)  # NotFound first
        names = list(values)
        columns = ", ".join(["service_id", *names])
        placeholders = ", ".join(f"${i + 1}" for i in range(len(names) + 1))
        updates = ", ".join([*(f"{n} = EXCLUDED.{n}" for n in names), "updated_at = now()"])
        await self.pool.execute(
            f"INSERT INTO service_quotas ({columns}) VALUES ({placeholders}) "
            f"ON CONFLICT (service_id) DO UPDATE SET {updates}", service_id, *values.values())
        return await self.overrides(service_id)

    async def streams_owned(self, service_id: int) -> int:
        return await self.pool.fetchval("SELECT count(*) FROM video_streams WHERE owner_service_id = $1",
                                        service_id)

    async def sightings(self, service_id: int) -> int:
        """Sightings a recognition service holds."""
        return await self.pool.fetchval("SELECT count(*) FROM sightings WHERE service_id = $1", service_id)

    async def event_media_bytes(self, service_id: int) -> int:
        """Bytes of event crops and frames stored for the streams the service owns."""
        return await self.pool.fetchval(
            "SELECT coalesce(sum(e.media_bytes), 0) FROM video_events e JOIN video_streams s ON s.id = e.stream_id "
            "WHERE s.owner_service_id = $1", service_id)
