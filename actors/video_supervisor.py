"""VideoSupervisor: keeps one VideoWorker actor running per enabled stream of the streams table.

A worker's actor name carries its stream id and a digest of the stream's settings
(``video-worker-<id>-<digest>``), so reconciling is a comparison of names: the supervisor lists the
named worker actors of the cluster, starts the missing ones, and kills those whose stream was
deleted, disabled or changed (a changed stream gets a new name, hence a fresh worker) or is settled
(finished or failed with its current settings: it runs again only when they change). It reconciles
every ``video_reconcile_s`` seconds and at once when the API calls :meth:`VideoSupervisor.reconcile`
after a change, so streams take effect without restarting anything. It keeps no state of its own:
after a restart it finds the running workers by name.

It also enforces the retention of events and sightings: every ``EXPIRY_EVERY_S`` seconds it deletes
the events older than ``event_retention_days`` with their images, the images of streams that no
longer exist, and the sightings older than ``sighting_retention_days`` (their rows and crops in the
sighting tables, then their records; the service's identity keeper reloads what is left).

Workers are detached actors, restarted by Ray when their process dies, placed wherever the
cluster has ``video_worker_num_cpus`` free.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone

import ray

from actors.unknown_faces import UnknownFaces
from actors.video import VideoWorker
from actors.video_recorder import NAMESPACE, RECORDER_NAME
from faces_settings import Settings
from store.control import ControlPlane
from store.errors import NotFound
from store.event_media import EventMedia
from store.sightings import SightingStore, expired_sightings
from store.video_store import Stream, VideoStore

log = logging.getLogger(__name__)

SUPERVISOR_NAME = "video-supervisor"
WORKER_PREFIX = "video-worker-"
EXPIRY_EVERY_S = 60.0
EXPIRED_SIGHTINGS_PER_ROUND = 10_000  # erased per expiry round; the rest in the next rounds


def worker_name(stream: Stream) -> str:
    """``video-worker-<id>-<settings digest>``: a settings change means another worker."""
    return f"{WORKER_PREFIX}{stream.id}-{stream.settings_digest()}"


def running_workers() -> set[str]:
    """Names of the worker actors alive (or restarting) in the cluster."""
    return {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor.get("namespace") == NAMESPACE and actor["name"].startswith(WORKER_PREFIX)}


def _kill(name: str) -> None:
    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    except ValueError:  # already gone
        pass


class VideoSupervisor:
    """Reconciles the running workers with the streams table; see the module docstring."""

    def __init__(self, settings: Settings, app_name: str):
        self.settings = settings
        self.app_name = app_name
        self._lock = asyncio.Lock()
        self._control: ControlPlane | None = None
        self._store: VideoStore | None = None
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _video_store(self) -> VideoStore:
        if self._store is None:
            self._control = await ControlPlane.connect(self.settings.postgres_dsn, min_size=1, max_size=2,
                                                       application="faces-video")
            self._store = VideoStore(self._control.pool)
        return self._store

    async def reconcile(self) -> dict[int, str]:
        """Bring the workers in line with the table now; returns ``{stream id: worker name}``."""
        async with self._lock:
            store = await self._video_store()
            streams = await store.list_streams()
            desired = {worker_name(s): s for s in streams if s.enabled and not s.settled}
            live = running_workers()
            for name in live - set(desired):
                log.info("stopping %s", name)
                _kill(name)
            for name, stream in desired.items():
                if name not in live:
                    log.info("starting %s for %s", name, stream.source_url)
                    ray.remote(VideoWorker).options(
                        name=name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                        max_restarts=-1, num_cpus=self.settings.video_worker_num_cpus,
                    ).remote(stream, self.settings, self.app_name)
            for stream in streams:
                if not stream.enabled and (stream.status is None or stream.status.state != "stopped"):
                    status = stream.status
                    await store.set_status(stream.id, "stopped", None, None, status.frames if status else 0,
                                           status.faces if status else 0, status.events if status else 0, 0.0,
                                           status.started_at if status else None)
            return {stream.id: name for name, stream in desired.items()}

    async def expire_events(self) -> int:
        """Delete events past the retention with their images, and the image folders of deleted streams
        (a worker may write one more image after its stream is deleted); returns how many events."""
        store = await self._video_store()
        media = EventMedia(self.settings.video_media_uri)
        expired: list[str] = []
        if self.settings.event_retention_days > 0:
            cutoff = datetime.now(timezone.utc) - timedelta(days=self.settings.event_retention_days)
            expired = await store.delete_events_before(cutoff)
            await asyncio.to_thread(media.delete_files, expired)
        streams = {stream.id for stream in await store.list_streams()}
        newest = max(streams, default=0)  # ids only grow: a folder above the newest may be a stream just created
        for stream_id in await asyncio.to_thread(media.stream_ids):
            if stream_id not in streams and stream_id < newest:
                await asyncio.to_thread(media.delete_stream, stream_id)
        return len(expired)

    async def expire_sightings(self) -> int:
        """Erase up to ``EXPIRED_SIGHTINGS_PER_ROUND`` sightings past the retention; returns how many."""
        if self.settings.sighting_retention_days <= 0:
            return 0
        await self._video_store()
        control = self._control
        cutoff = datetime.now(timezone.utc) - timedelta(days=self.settings.sighting_retention_days)
        expired = await expired_sightings(control.pool, cutoff, EXPIRED_SIGHTINGS_PER_ROUND)
        for service_id, ids in expired.items():
            try:
                service = await control.get_service(service_id)
            except NotFound:  # deleted meanwhile, with its sightings
                continue
            unknown = UnknownFaces.open(service, SightingStore(control.pool), self.settings,
                                        self.settings.recognition_threshold_of(service))
            await unknown.erase(ids)
        return sum(len(ids) for ids in expired.values())

    async def _loop(self) -> None:
        last_expiry = 0.0
        while True:
            try:
                await self.reconcile()
                if time.monotonic() - last_expiry >= EXPIRY_EVERY_S:
                    last_expiry = time.monotonic()
                    await self.expire_events()
                    await self.expire_sightings()
            except Exception:  # keep supervising; the next round retries
                log.exception("video reconcile failed")
            await asyncio.sleep(self.settings.video_reconcile_s)


def ensure_supervisor(settings: Settings, app_name: str):
    """The cluster's supervisor actor, created (detached, restartable, no CPU) if missing."""
    return ray.remote(VideoSupervisor).options(
        name=SUPERVISOR_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
        max_restarts=-1, max_task_retries=-1, num_cpus=0,
    ).remote(settings, app_name)


def stop_video() -> None:
    """Kill the supervisor, every worker and their recorder (the application is being stopped)."""
    _kill(SUPERVISOR_NAME)
    for name in running_workers():
        _kill(name)
    _kill(RECORDER_NAME)
