"""VideoWorker: one Ray actor per video stream: source -> frames -> tracks -> best shots -> events.

Frames go to the Embedder deployment (detection batched with the HTTP traffic, embeddings of the
chips the tracker asks for); best shots are matched against the watchlist service's index shards.
Each event's best shot is remembered as a sighting of the watchlist service (source ``stream:<id>``;
unknown faces get identities like recognize's) and the event links to it; both are stored in order by
a task of their own, so that the frame loop does not wait for them. Events are stored in
PostgreSQL (crops under the data dir), announced to the SSE relays by NOTIFY,
and POSTed to the stream's webhook. The worker reports its status to PostgreSQL every second. It
reaches PostgreSQL only through the shared VideoRecorder (``actors/video_recorder.py``), so streams
cannot exhaust PostgreSQL's connections.

A source that drops (or cannot be reached) is retried with exponential backoff, state
``reconnecting``; one that can never work (not a video, corrupt, unknown protocol, refused by the
outbound policy) ends in ``failed`` with the reason; a file that reaches its end is ``finished``. The supervisor
(``actors/video_supervisor.py``) creates, replaces and removes workers; it does not run a finished or
failed stream again until its settings change.

The source and the webhook are checked against the outbound policy (``FACES_FILE_ROOTS``,
``FACES_ALLOWED_NETWORKS``) each time they are connected to; a stream of a video service key may not
open local files. Reasons and log lines carry URLs with their credentials masked.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from datetime import datetime, timedelta, timezone

import numpy as np
from ray import serve

from actors.face_batch import FaceRequest, FaceResponse
from actors.index_shard import CALL_TIMEOUT_S, ShardGroup
from actors.unknown_faces import new_sighting
from actors.video_recorder import ensure_recorder
from facecore.face_json import box_of
from facecore.pipeline import Face
from faces_settings import Settings
from facevideo.config import ProcessingOptions
from facevideo.events import VideoEvent
from facevideo.processor import StreamProcessor
from facevideo.source import FrameReader, SourceError
from facevideo.webhooks import WebhookSender
from outbound import redact
from serve_app.video_json import event_json
from store.control import Service
from store.event_media import EventMedia
from store.video_store import StoredEvent, Stream

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 1.0
FPS_WINDOW_S = 5.0
RECONNECT_FIRST_S = 1.0
WEBHOOK_FLUSH_S = 30.0


class ServeBackend:
    """Detection and embedding on the Embedder deployment."""

    def __init__(self, handle):
        self.handle = handle

    async def detect(self, image: np.ndarray, threshold: float) -> list[Face]:
        request = FaceRequest(image=image, det_prob_threshold=threshold, embed=False)
        response: FaceResponse = await self.handle.process.remote(request)
        return response.unwrap().faces

    async def embed(self, chips: np.ndarray) -> np.ndarray:
        return await self.handle.embed_chips.remote(chips)


class ShardWatchlist:
    """A recognition service's faces, searched on its index shards (``threshold``: its recognition
    threshold); the service also keeps the events' best shots as sightings."""

    def __init__(self, service: Service, shards: ShardGroup, threshold: float):
        self.service = service
        self.shards = shards
        self.threshold = threshold

    async def best_matches(self, queries: np.ndarray) -> list[tuple[str, float] | None]:
        results = await self.shards.search_subjects(queries, 1)
        return [(found[0][0], found[0][1]) if found else None for found in results]


class VideoWorker:
    """Runs one stream until it is finished, failed or killed by the supervisor."""

    def __init__(self, stream: Stream, settings: Settings, app_name: str):
        self.stream = stream
        self.settings = settings
        self.app_name = app_name
        self.session = secrets.token_hex(4)
        self.state = "starting"
        self.reason: str | None = None
        self.frames = self.faces = self.events = 0
        self.started_at = datetime.now(timezone.utc)
        self._frame_times: collections.deque[float] = collections.deque()
        self._recorder = ensure_recorder(settings)  # PostgreSQL through one shared pool, not one per stream
        self._media = EventMedia(settings.video_media_uri)
        self._policy = settings.outbound_policy()
        self._webhook: WebhookSender | None = None
        self._active_watchlist: ShardWatchlist | None = None
        self._model: str | None = None
        self._queue: asyncio.Queue[tuple[VideoEvent, datetime]] = asyncio.Queue()
        self._store_error: Exception | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._main())

    async def status(self) -> dict:
        """The worker's own view, for operators (the API reads the status table, written each second)."""
        return {"stream_id": self.stream.id, "state": self.state, "reason": self.reason, "frames": self.frames,
                "faces": self.faces, "events": self.events, "fps": self._fps()}

    def _fps(self) -> float:
        now = time.monotonic()
        while self._frame_times and now - self._frame_times[0] > FPS_WINDOW_S:
            self._frame_times.popleft()
        if len(self._frame_times) < 2:
            return 0.0
        return (len(self._frame_times) - 1) / max(now - self._frame_times[0], 1e-6)

    def _set_state(self, state: str, reason: str | None = None) -> None:
        reason = redact(reason)
        if (state, reason) != (self.state, self.reason):
            log.info("stream %d: %s%s", self.stream.id, state, f" ({reason})" if reason else "")
        self.state, self.reason = state, reason
        self._changed.set()

    async def _watchlist_service(self, service_id: int) -> Service | None:
        while True:
            try:
                return await self._recorder.get_service.remote(service_id)
            except Exception as exc:  # PostgreSQL not reachable (yet): keep trying, the stream waits
                log.warning("stream %d: cannot reach PostgreSQL (%s); retrying", self.stream.id, exc)
                await asyncio.sleep(RECONNECT_FIRST_S * 5)

    async def _main(self) -> None:
        reporter = asyncio.create_task(self._report_status())
        storer = asyncio.create_task(self._store_queued())
        sender: asyncio.Task | None = None
        try:
            watchlist, threshold = await self._watchlist()
            self._active_watchlist = watchlist
            if self.stream.webhook_url and not self.stream.webhook_secret:
                log.warning("stream %d: its webhook has no secret; nothing is sent to it", self.stream.id)
            elif self.stream.webhook_url:
                self._webhook = WebhookSender(self.stream.webhook_url, self.stream.webhook_secret,
                                              policy=self._policy)
                sender = asyncio.create_task(self._webhook.run())
            state, reason = await self._run(watchlist, threshold)
        except Exception as exc:  # a worker must report why it stopped rather than die silently
            log.exception("stream %d stopped", self.stream.id)
            state, reason = "failed", f"internal error: {exc}"
        # The final state is published once the events are stored and the webhooks delivered: the
        # supervisor stops finished and failed workers.
        await self._queue.join()
        storer.cancel()
        await self._flush_webhooks()
        if sender is not None:
            sender.cancel()
        reporter.cancel()
        self._set_state(state, reason)
        await self._write_status()

    async def _watchlist(self) -> tuple[ShardWatchlist | None, float]:
        service_id = self.stream.watchlist_service_id
        if service_id is None:
            return None, self.settings.recognition_threshold
        service = await self._watchlist_service(service_id)
        if service is None:
            return None, self.settings.recognition_threshold
        shards = ShardGroup.of(service, self.settings, call_timeout_s=CALL_TIMEOUT_S)
        threshold = self.settings.recognition_threshold_of(service)
        return ShardWatchlist(service, shards, threshold), threshold

    def _options(self, threshold: float) -> ProcessingOptions:
        stream = self.stream
        return ProcessingOptions(
            mode=stream.mode, max_fps=stream.max_fps, min_face_size=stream.min_face_size, roi=stream.roi,
            det_prob_threshold=(stream.det_prob_threshold if stream.det_prob_threshold is not None
                                else self.settings.det_prob_threshold),
            recognition_threshold=threshold, save_frame=stream.save_frame)

    async def _run(self, watchlist: ShardWatchlist | None, threshold: float) -> tuple[str, str | None]:
        """Connect, process, and reconnect with backoff until the source finishes or fails for good;
        returns that final state and its reason."""
        backend = ServeBackend(serve.get_deployment_handle("Embedder", app_name=self.app_name))
        options = self._options(threshold)
        failures = 0
        connection = 0
        while True:
            connection += 1
            processor = StreamProcessor(backend, watchlist, options, session=f"{self.session}.{connection}")
            reader = FrameReader(self.stream.source_url, options.max_fps, realtime=True, policy=self._policy,
                                 admin=self.stream.owner_service_id is None)
            origin = datetime.now(timezone.utc)
            try:
                await reader.start()
                self._set_state("running")
                while (frame := await reader.next()) is not None:
                    failures = 0  # the backoff restarts once frames flow again
                    faces_before = processor.faces
                    events = await processor.process(frame)
                    self.frames += 1
                    self.faces += processor.faces - faces_before
                    self._frame_times.append(time.monotonic())
                    await self._publish(events, origin)
                await self._publish(await processor.finish(), origin)
                return "finished", None
            except SourceError as exc:
                await self._finish_tracks(processor, origin)
                if exc.permanent:
                    return "failed", str(exc)
                reason = str(exc)
            except Exception as exc:  # the embedder, the shards or PostgreSQL: retried like a drop
                log.exception("stream %d: processing failed", self.stream.id)
                await self._finish_tracks(processor, origin)
                reason = f"processing failed: {exc}"
            finally:
                reader.stop()
            failures += 1
            delay = min(self.settings.video_reconnect_max_s, RECONNECT_FIRST_S * 2 ** (failures - 1))
            self._set_state("reconnecting", f"{reason}; attempt {failures}, next in {delay:.0f} s")
            await asyncio.sleep(delay)

    async def _finish_tracks(self, processor: StreamProcessor, origin: datetime) -> None:
        """End the tracks of a dropped connection (``overall`` mode reports them now)."""
        try:
            await self._publish(await processor.finish(), origin)
        except Exception:
            log.exception("stream %d: could not report the tracks of a dropped connection", self.stream.id)

    async def _publish(self, events: list[VideoEvent], origin: datetime) -> None:
        """Queue events for :meth:`_store_queued` (in order, off the frame loop); a failure to store an
        earlier one is raised here, so the frame loop reconnects as after any processing failure."""
        if self._store_error is not None:
            error, self._store_error = self._store_error, None
            raise error
        for event in events:
            self._queue.put_nowait((event, origin))

    async def _store_queued(self) -> None:
        """Store queued events one by one (each a sighting, then the event: a few round trips that
        must not hold up frames), and hand them to the webhook."""
        while True:
            event, origin = await self._queue.get()
            try:
                if self._store_error is None:
                    stored = await self._store_event(event, origin)
                    self.events += 1
                    if self._webhook is not None:
                        self._webhook.submit(stored.id, event_json(stored))
            except Exception as exc:  # PostgreSQL out: the frame loop learns it at its next publish
                log.exception("stream %d: could not store an event", self.stream.id)
                self._store_error = exc
            finally:
                self._queue.task_done()

    async def _remember(self, event: VideoEvent, seen_at: datetime) -> str | None:
        """The event's best shot as a sighting of the watchlist service; its id (None: no watchlist, the
        service's quota of sightings is full, or the sighting could not be stored: the event is kept
        without it)."""
        watchlist = self._active_watchlist
        if watchlist is None:
            return None
        sighting = new_sighting(seen_at, f"stream:{self.stream.id}", box_of(event.box, event.detection_score),
                                float(event.quality), event.subject, event.embedding)
        try:
            if self._model is None:  # the embedding model's version, recorded with the sighting rows
                embedder = serve.get_deployment_handle("Embedder", app_name=self.app_name)
                self._model = (await embedder.model_versions.remote())["calculator"]
            if not await self._recorder.remember_sighting.remote(watchlist.service, watchlist.threshold, sighting,
                                                                 event.crop, self._model):
                return None  # the watchlist service holds its quota of sightings
        except Exception:  # the embedder, sighting shards or identity keeper are out: the event still counts
            log.exception("stream %d: could not remember the best shot of track %s", self.stream.id,
                          event.track_id)
            return None
        return sighting.id

    async def _store_event(self, event: VideoEvent, origin: datetime) -> StoredEvent:
        sighting_id = await self._remember(event, origin + timedelta(seconds=event.last_seen))
        key = f"{event.track_id}-{secrets.token_hex(4)}"
        owner = self.stream.owner_service_id
        crop_path = frame_path = None
        media_bytes = 0
        if await self._recorder.media_allowed.remote(owner):  # else beyond the owner's media quota
            crop_path = await asyncio.to_thread(self._media.save, self.stream.id, f"{key}-crop", event.crop)
            media_bytes = len(event.crop)
            if event.frame is not None:
                frame_path = await asyncio.to_thread(self._media.save, self.stream.id, f"{key}-frame", event.frame)
                media_bytes += len(event.frame)
        return await self._recorder.add_event.remote(
            owner, self.stream.id, event.track_id, event.reason, origin + timedelta(seconds=event.first_seen),
            origin + timedelta(seconds=event.last_seen), event.box, event.quality, event.detection_score,
            event.subject, event.similarity, crop_path, frame_path, media_bytes, sighting_id)

    async def _flush_webhooks(self, timeout_s: float = WEBHOOK_FLUSH_S) -> None:
        """Give queued webhook deliveries (and their retries) time before the worker stops."""
        deadline = time.monotonic() + timeout_s
        while self._webhook is not None and self._webhook.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def _report_status(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._changed.wait(), STATUS_INTERVAL_S)
            except asyncio.TimeoutError:
                pass
            self._changed.clear()
            await self._write_status()

    async def _write_status(self) -> None:
        try:
            await self._recorder.set_status.remote(self.stream.id, self.state, self.reason,
                                                   self.stream.settings_digest(), self.frames, self.faces,
                                                   self.events, self._fps(), self.started_at)
        except Exception:  # status is best effort; the next report retries
            log.exception("stream %d: could not write its status", self.stream.id)
