"""Per-replica state of the ingress: settings, embedder handle, control plane, shard groups, stats."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from actors.shard_group import ShardGroup
from facecore.models import SFACE
from facecore.settings import Settings
from store.control import ControlPlane, Service

log = logging.getLogger(__name__)

STATS_FLUSH_SECONDS = 5.0


class AppContext:
    """Everything a request handler needs, created once per ingress replica."""

    def __init__(self, settings: Settings, embedder, replica: str):
        self.settings = settings
        self.embedder = embedder
        self.replica = replica
        self._control: ControlPlane | None = None
        self._control_lock = asyncio.Lock()
        self._groups: dict[tuple[int, int], ShardGroup] = {}
        self._stats: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
        self._last_flush = time.monotonic()
        self._model_versions: dict[str, str] | None = None

    async def control(self) -> ControlPlane:
        if self._control is None:
            async with self._control_lock:
                if self._control is None:
                    self._control = await ControlPlane.connect(self.settings.postgres_dsn)
        return self._control

    def shards(self, service: Service) -> ShardGroup:
        key = (service.id, service.shards)
        if key not in self._groups:
            self._groups[key] = ShardGroup(service.id, service.shards, self.settings.faces_uri, SFACE.embedding_dim)
        return self._groups[key]

    def forget_shards(self, service_id: int) -> None:
        for key in [k for k in self._groups if k[0] == service_id]:
            del self._groups[key]

    async def model_versions(self) -> dict[str, str]:
        if self._model_versions is None:
            self._model_versions = await self.embedder.model_versions.remote()
        return self._model_versions

    def recognition_threshold(self, service: Service) -> float:
        """The service's own 'unknown' threshold, else the platform default."""
        if service.similarity_threshold is not None:
            return service.similarity_threshold
        return self.settings.recognition_threshold

    async def count_request(self, service_id: int, endpoint: str, failed: bool) -> None:
        """Buffer request statistics; written to PostgreSQL every few seconds, not per request."""
        counters = self._stats[(service_id, endpoint)]
        counters[0] += 1
        counters[1] += int(failed)
        if time.monotonic() - self._last_flush >= STATS_FLUSH_SECONDS:
            await self.flush_stats()

    async def flush_stats(self) -> None:
        self._last_flush = time.monotonic()
        if not self._stats:
            return
        pending = {key: (counts[0], counts[1]) for key, counts in self._stats.items()}
        self._stats.clear()
        try:
            await (await self.control()).record_requests(pending)
        except Exception:  # statistics must never fail a request
            log.exception("could not record request statistics")


_context: AppContext | None = None


def set_context(context: AppContext) -> None:
    global _context
    _context = context


def get_context() -> AppContext:
    if _context is None:
        raise RuntimeError("the ingress context is not initialised")
    return _context
