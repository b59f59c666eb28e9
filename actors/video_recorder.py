"""VideoRecorder: the video workers' one connection pool to PostgreSQL.

Each stream's worker is its own process; with a pool each, a hundred streams (even at a dead source)
would hold a hundred PostgreSQL connections, PostgreSQL's default limit, and the control plane would
fail for everyone. Workers write their status and events through this one detached actor instead,
which holds a pool of at most :data:`POOL_SIZE` connections whatever the number of streams. It also
keeps the event media quota: a video service's streams store crops and frames until their bytes
reach the service's ``event_media_bytes`` quota, then events without images. Events' best shots are
remembered here as sightings of the watchlist service (:class:`actors.unknown_faces.UnknownFaces`,
on the same pool), where recognize's unknown faces are.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import ray

from actors.unknown_faces import UnknownFaces
from faces_settings import Settings
from store.control import ControlPlane, Service
from store.errors import NotFound
from store.quotas import CachedUsage, QuotaStore
from store.sightings import NewSighting, SightingStore
from store.video_store import StoredEvent, VideoStore

NAMESPACE = "faces"  # of every video actor: supervisor, workers, recorder
RECORDER_NAME = "video-recorder"
POOL_SIZE = 4
MEDIA_USAGE_REFRESH_S = 10.0


class VideoRecorder:
    """Status and event writes of every video worker, on one small pool; see the module docstring."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._control: ControlPlane | None = None
        self._lock = asyncio.Lock()
        self._media: dict[int, tuple[float, int, int]] = {}  # service -> (read at, quota, bytes used)
        self._sightings = CachedUsage(MEDIA_USAGE_REFRESH_S)
        self._unknown_faces: dict[tuple[int, int], UnknownFaces] = {}  # (service, shards) -> its sightings

    async def _connected(self) -> ControlPlane:
        async with self._lock:
            if self._control is None:
                self._control = await ControlPlane.connect(self.settings.postgres_dsn, min_size=1, max_size=POOL_SIZE,
                                                            application="faces-video")
        return self._control

    async def connections(self) -> int:
        """Connections of the pool now (for tests and operators)."""
        return (await self._connected()).pool.get_size()

    async def get_service(self, service_id: int) -> Service | None:
        try:
            return await (await self._connected()).get_service(service_id)
        except NotFound:
            return None

    async def set_status(self, *args) -> None:
        """:meth:`VideoStore.set_status`."""
        await VideoStore((await self._connected()).pool).set_status(*args)

    async def media_allowed(self, owner_service_id: int | None) -> bool:
        """Whether the owner's streams may store another event's images (the admin's always may)."""
        if owner_service_id is None:
            return True
        read_at, quota, used = self._media.get(owner_service_id, (0.0, 0, 0))
        if time.monotonic() - read_at > MEDIA_USAGE_REFRESH_S:
            store = QuotaStore((await self._connected()).pool)
            try:
                overrides = await store.overrides(owner_service_id)
            except NotFound:  # the service is being deleted with its streams
                return False
            quota = overrides.get("event_media_bytes", self.settings.quota_event_media_bytes)
            used = await store.event_media_bytes(owner_service_id)
            self._media[owner_service_id] = (time.monotonic(), quota, used)
        return used < quota

    async def remember_sighting(self, service: Service, threshold: float, sighting: NewSighting, crop: bytes,
                                model: str) -> bool:
        """Store an event's best shot as a sighting of the watchlist ``service`` (``threshold``: its
        recognition threshold); an unknown face gets an identity there, as recognize's do. False when
        the service holds its quota of sightings: nothing is stored."""
        quotas = QuotaStore((await self._connected()).pool)
        try:
            limit = (await quotas.overrides(service.id)).get("sightings", self.settings.quota_sightings)
        except NotFound:  # the service is being deleted
            return False
        if await self._sightings.get(service.id, lambda: quotas.sightings(service.id)) >= limit:
            return False
        key = (service.id, service.shards, service.shard_replicas)
        if key not in self._unknown_faces:
            store = SightingStore((await self._connected()).pool)
            self._unknown_faces[key] = UnknownFaces.open(service, store, self.settings, threshold)
        await self._unknown_faces[key].store_sightings([sighting], [crop], model, threshold)
        self._sightings.add(service.id, 1)
        return True

    async def add_event(self, owner_service_id: int | None, stream_id: int, track_id: str, reason: str,
                        first_seen: datetime, last_seen: datetime, box: tuple[float, float, float, float],
                        quality: float, detection_score: float, subject: str | None, similarity: float | None,
                        crop_path: str | None, frame_path: str | None, media_bytes: int,
                        sighting_id: str | None = None) -> StoredEvent:
        """:meth:`VideoStore.add_event`, counting its media against the owner's quota."""
        event = await VideoStore((await self._connected()).pool).add_event(
            stream_id, track_id, reason, first_seen, last_seen, box, quality, detection_score, subject, similarity,
            crop_path, frame_path, media_bytes=media_bytes, sighting_id=sighting_id)
        if owner_service_id in self._media:
            read_at, quota, used = self._media[owner_service_id]
            self._media[owner_service_id] = (read_at, quota, used + media_bytes)
        return event


def ensure_recorder(settings: Settings):
    """The cluster's recorder actor, created (detached, restartable, no CPU) if missing."""
    return ray.remote(VideoRecorder).options(
        name=RECORDER_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
        max_restarts=-1, num_cpus=0,  # no task retries: an event must not be stored twice
    ).remote(settings)
