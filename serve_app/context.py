"""Per-replica state of the ingress: settings, embedder handle, control plane, shard groups, stats."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from actors.index_shard import RequestShardGroups, ShardGroup
from actors.unknown_faces import UnknownFaces
from facecore.embed import DEFAULT_EMBEDDING_MODEL, model_id
from faces_settings import Settings
from gallery.service_gallery import Gallery
from serve_app.errors import BAD_PARAMETER, ApiError
from serve_app.quotas import QUOTA_CACHE_S, ConnectionSlots, QuotaCache, Quotas, RateLimiter, share
from store.control import ControlPlane, Service
from store.quotas import CachedUsage, QuotaStore
from store.sightings import SightingStore

log = logging.getLogger(__name__)

STATS_FLUSH_SECONDS = 2.0
INGRESS_APPLICATION = "faces-ingress"  # PostgreSQL's application_name of the ingress replicas' connections


class AppContext:
    """Everything a request handler needs, created once per ingress replica."""

    def __init__(self, settings: Settings, embedder, replica: str):
        self.settings = settings
        self.embedder = embedder
        self.replica = replica
        self._control: ControlPlane | None = None
        self._control_lock = asyncio.Lock()
        self._groups = RequestShardGroups(settings)
        self._unknown_faces: dict[tuple[int, int], UnknownFaces] = {}
        self._stats: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
        self._stats_flusher: asyncio.Task | None = None
        self._model_versions: dict[str, str] | None = None
        self._background: set[asyncio.Task] = set()
        self.quotas = QuotaCache(settings.default_quotas())
        self.sighting_usage = CachedUsage(QUOTA_CACHE_S)
        self.rate_limiter = RateLimiter()
        self.sse_slots = ConnectionSlots(settings.sse_connections_per_replica)

    async def control(self) -> ControlPlane:
        if self._control is None:
            async with self._control_lock:
                if self._control is None:
                    self._control = await ControlPlane.connect(self.settings.postgres_dsn, application=INGRESS_APPLICATION)
        return self._control

    async def quota_store(self) -> QuotaStore:
        return QuotaStore((await self.control()).pool)

    async def service_quotas(self, service_id: int) -> Quotas:
        return await self.quotas.get(await self.quota_store(), service_id)

    async def admit(self, service: Service) -> None:
        """Count one request against the service's rate limit (this replica's share); 429 beyond."""
        quotas = await self.service_quotas(service.id)
        self.rate_limiter.acquire(service.id, share(quotas.requests_per_s, self.settings.ingress_replicas))

    def shards(self, service: Service) -> ShardGroup:
        return self._groups.of(service.id, service.shards, service.shard_replicas, service.model)

    async def gallery(self, service: Service) -> Gallery:
        """The service's gallery: every change of its subjects and faces goes through it."""
        return Gallery(await self.control(), self.shards(service), service.id)

    async def unknown_faces(self, service: Service) -> UnknownFaces:
        """The service's sightings and identities of unknown faces."""
        key = (service.id, service.shards, service.shard_replicas)
        if key not in self._unknown_faces:
            self._unknown_faces[key] = UnknownFaces.open(service, SightingStore((await self.control()).pool),
                                                         self.settings, self.recognition_threshold(service))
        return self._unknown_faces[key]

    @staticmethod
    def require_sightings(service: Service) -> None:
        """400 unless the service may remember and search sightings of unknown faces: those hold
        embeddings of the default model, so services of another model may not."""
        if service.model != DEFAULT_EMBEDDING_MODEL:
            raise ApiError(400, f"sightings of unknown faces are kept for {DEFAULT_EMBEDDING_MODEL} services only; "
                                f"this service's model is {service.model}", BAD_PARAMETER)

    def forget_shards(self, service_id: int) -> None:
        self._groups.forget(service_id)
        for key in [k for k in self._unknown_faces if k[0] == service_id]:
            del self._unknown_faces[key]

    def start_background(self, work) -> None:
        """Run a coroutine after the response, keeping a reference until it ends; failures are logged."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)

        def finished(done: asyncio.Task) -> None:
            self._background.discard(done)
            if not done.cancelled() and done.exception() is not None:
                log.error("background work failed", exc_info=done.exception())

        task.add_done_callback(finished)

    async def model_versions(self, service: Service | None = None) -> dict[str, str]:
        """The models the embedder runs; with a ``service``, its embedding model as the calculator."""
        if self._model_versions is None:
            self._model_versions = await self.embedder.model_versions.remote()
        if service is None:
            return self._model_versions
        return {**self._model_versions, "calculator": model_id(service.model)}

    def recognition_threshold(self, service: Service) -> float:
        """The service's own 'unknown' threshold, else the platform default."""
        return self.settings.recognition_threshold_of(service)

    def count_request(self, service_id: int, endpoint: str, failed: bool) -> None:
        """Buffer request statistics; a background task writes them to PostgreSQL every few seconds."""
        counters = self._stats[(service_id, endpoint)]
        counters[0] += 1
        counters[1] += int(failed)
        if self._stats_flusher is None:
            self._stats_flusher = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(STATS_FLUSH_SECONDS)
            await self.flush_stats()

    async def flush_stats(self) -> None:
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


async def request_context() -> AppContext:
    """:func:`get_context` as a FastAPI dependency: async, so it runs inline, not in a worker thread."""
    return get_context()
