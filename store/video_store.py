"""PostgreSQL tables of video: streams, their status, and their events (on the ControlPlane's pool).

A stream's configuration is written by the API; its status row only by its worker. Adding an event
also sends a PostgreSQL ``NOTIFY`` on :data:`EVENTS_CHANNEL` with the event as JSON (delivered when
the insert commits), which every ingress replica relays to its Server-Sent-Events clients.

Errors: :class:`~store.errors.NotFound` for a missing stream or event.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime

import asyncpg

from store.errors import NotFound

EVENTS_CHANNEL = "video_events"

# Columns the API may set on create and change on update.
STREAM_SETTINGS = ("name", "source_url", "watchlist_service_id", "max_fps", "min_face_size", "roi", "mode",
                   "det_prob_threshold", "save_frame", "enabled", "webhook_url", "webhook_secret")

_STREAM_COLUMNS = ("s.id, s.name, s.owner_service_id, s.source_url, s.watchlist_service_id, s.max_fps, "
                   "s.min_face_size, s.roi, s.mode, s.det_prob_threshold, s.save_frame, s.enabled, s.webhook_url, "
                   "s.webhook_secret, s.created_at, s.updated_at, st.state, st.reason, st.digest, st.frames, st.faces, "
                   "st.events, st.fps, st.started_at, st.updated_at AS status_at")
_STREAM_FROM = "video_streams s LEFT JOIN video_stream_status st ON st.stream_id = s.id"
_EVENT_COLUMNS = ("e.id, e.stream_id, e.track_id, e.reason, e.first_seen, e.last_seen, e.box, e.quality, "
                  "e.detection_score, e.subject, e.similarity, e.crop_path, e.frame_path, e.created_at, "
                  "sg.id::text AS sighting_id, CASE WHEN sg.subject IS NULL THEN sg.identity_id END AS identity_id")
# An event with its sighting (gone with its service's rows) and the sighting's identity of unknowns.
_EVENT_FROM = "{events} e LEFT JOIN sightings sg ON sg.id = e.sighting_id"


@dataclass(frozen=True)
class StreamStatus:
    """What a stream's worker last reported. ``state``: starting, running, reconnecting, failed,
    finished (a file source reached its end) or stopped (disabled). ``digest``: the
    :meth:`Stream.settings_digest` of the settings it ran with."""

    state: str
    reason: str | None
    digest: str | None
    frames: int
    faces: int
    events: int
    fps: float
    started_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class Stream:
    """A video stream: its configuration, owner (the video service that created it, None for the
    admin) and its status (None until its worker first reports)."""

    id: int
    name: str
    owner_service_id: int | None
    source_url: str
    watchlist_service_id: int | None
    max_fps: float
    min_face_size: int
    roi: tuple[float, float, float, float] | None
    mode: str
    det_prob_threshold: float | None
    save_frame: bool
    enabled: bool
    webhook_url: str | None
    webhook_secret: str | None
    created_at: datetime
    updated_at: datetime
    status: StreamStatus | None

    def settings(self) -> dict:
        """The configuration the worker runs with; any change to it restarts the worker."""
        return {name: getattr(self, name) for name in STREAM_SETTINGS}

    def settings_digest(self) -> str:
        """A short digest of :meth:`settings` and the last update: another value means another run."""
        text = json.dumps({**self.settings(), "updated_at": self.updated_at}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def settled(self) -> bool:
        """Finished or failed with its current settings: nothing to run until they change."""
        status = self.status
        return (status is not None and status.state in ("finished", "failed")
                and status.digest == self.settings_digest())


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored; ``box`` is ``(x1, y1, x2, y2)``; paths are relative to the media root.
    ``sighting_id``: its best shot's sighting in the watchlist service (None: not stored as one);
    ``identity_id``: that sighting's identity of unknown faces, if any."""

    id: int
    stream_id: int
    track_id: str
    reason: str
    first_seen: datetime
    last_seen: datetime
    box: tuple[float, float, float, float]
    quality: float
    detection_score: float
    subject: str | None
    similarity: float | None
    crop_path: str | None
    frame_path: str | None
    created_at: datetime
    sighting_id: str | None = None
    identity_id: int | None = None

    def to_payload(self) -> str:
        """JSON for the NOTIFY channel (times as ISO strings)."""
        data = asdict(self)
        for name in ("first_seen", "last_seen", "created_at"):
            data[name] = data[name].isoformat()
        return json.dumps(data)

    @classmethod
    def from_payload(cls, payload: str) -> "StoredEvent":
        data = json.loads(payload)
        for name in ("first_seen", "last_seen", "created_at"):
            data[name] = datetime.fromisoformat(data[name])
        data["box"] = tuple(data["box"])
        return cls(**data)


def _stream(row: asyncpg.Record) -> Stream:
    status = None
    if row["state"] is not None:
        status = StreamStatus(state=row["state"], reason=row["reason"], digest=row["digest"],
                              frames=row["frames"], faces=row["faces"],
                              events=row["events"], fps=row["fps"], started_at=row["started_at"],
                              updated_at=row["status_at"])
    values = {f.name: row[f.name] for f in fields(Stream) if f.name != "status"}
    values["roi"] = tuple(values["roi"]) if values["roi"] is not None else None
    return Stream(**values, status=status)


def _event(row: asyncpg.Record) -> StoredEvent:
    values = {f.name: row[f.name] for f in fields(StoredEvent)}
    values["box"] = tuple(float(v) for v in values["box"])
    return StoredEvent(**values)


class VideoStore:
    """Streams, statuses and events over an asyncpg pool (``ControlPlane.pool``)."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    # --- streams ------------------------------------------------------------------------------

    async def create_stream(self, owner_service_id: int | None, **settings) -> Stream:
        """Insert a stream with the given :data:`STREAM_SETTINGS` (values already validated)."""
        unknown = set(settings) - set(STREAM_SETTINGS)
        if unknown:
            raise ValueError(f"unknown stream settings: {sorted(unknown)}")
        names = ["owner_service_id", *settings]
        placeholders = ", ".join(f"${n}" for n in range(1, len(names) + 1))
        stream_id = await self._pool.fetchval(
            f"INSERT INTO video_streams ({', '.join(names)}) VALUES ({placeholders}) RETURNING id",
            owner_service_id, *settings.values())
        return await self.get_stream(stream_id)

    async def get_stream(self, stream_id: int) -> Stream:
        row = await self._pool.fetchrow(f"SELECT {_STREAM_COLUMNS} FROM {_STREAM_FROM} WHERE s.id = $1", stream_id)
        if row is None:
            raise NotFound(f"video stream {stream_id} not found")
        return _stream(row)

    async def list_streams(self, owner_service_id: int | None = None) -> list[Stream]:
        """Every stream (``owner_service_id`` None), or those of one video service; oldest first."""
        if owner_service_id is None:
            rows = await self._pool.fetch(f"SELECT {_STREAM_COLUMNS} FROM {_STREAM_FROM} ORDER BY s.id")
        else:
            rows = await self._pool.fetch(
                f"SELECT {_STREAM_COLUMNS} FROM {_STREAM_FROM} WHERE s.owner_service_id = $1 ORDER BY s.id",
                owner_service_id)
        return [_stream(row) for row in rows]

    async def update_stream(self, stream_id: int, changes: dict) -> Stream:
        """Set the given :data:`STREAM_SETTINGS`; :class:`NotFound` if the stream is missing."""
        unknown = set(changes) - set(STREAM_SETTINGS)
        if unknown:
            raise ValueError(f"unknown stream settings: {sorted(unknown)}")
        if changes:
            assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(changes, start=2))
            found = await self._pool.fetchval(
                f"UPDATE video_streams SET {assignments}, updated_at = now() WHERE id = $1 RETURNING id",
                stream_id, *changes.values())
            if found is None:
                raise NotFound(f"video stream {stream_id} not found")
        return await self.get_stream(stream_id)

    async def delete_stream(self, stream_id: int) -> Stream:
        """Delete a stream with its status and events; return it as it was."""
        stream = await self.get_stream(stream_id)
        await self._pool.execute("DELETE FROM video_streams WHERE id = $1", stream_id)
        return stream

    async def set_status(self, stream_id: int, state: str, reason: str | None, digest: str | None, frames: int,
                         faces: int, events: int, fps: float, started_at: datetime | None) -> None:
        """Record a worker's report; ignored when the stream was deleted meanwhile."""
        try:
            await self._pool.execute(
                """
                INSERT INTO video_stream_status AS st
                    (stream_id, state, reason, digest, frames, faces, events, fps, started_at, updated_at)
                SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, now()
                WHERE EXISTS (SELECT 1 FROM video_streams WHERE id = $1)
                ON CONFLICT (stream_id) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason,
                    digest = EXCLUDED.digest, frames = EXCLUDED.frames, faces = EXCLUDED.faces,
                    events = EXCLUDED.events, fps = EXCLUDED.fps, started_at = EXCLUDED.started_at, updated_at = now()
                """,
                stream_id, state, reason, digest, frames, faces, events, fps, started_at)
        except asyncpg.ForeignKeyViolationError:
            pass

    # --- events -------------------------------------------------------------------------------

    async def add_event(self, stream_id: int, track_id: str, reason: str, first_seen: datetime,
                        last_seen: datetime, box: tuple[float, float, float, float], quality: float,
                        detection_score: float, subject: str | None, similarity: float | None,
                        crop_path: str | None, frame_path: str | None, media_bytes: int = 0,
                        sighting_id: str | None = None) -> StoredEvent:
        """Store an event and announce it on :data:`EVENTS_CHANNEL` in the same transaction.

        ``media_bytes``: the size of its crop and frame files (counted against the event media quota of
        the stream's owner); an event stored beyond that quota has no crop."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"""
                WITH inserted AS (
                    INSERT INTO video_events (stream_id, track_id, reason, first_seen, last_seen, box, quality,
                                              detection_score, subject, similarity, crop_path, frame_path,
                                              media_bytes, sighting_id)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::uuid)
                    RETURNING *)
                SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM.format(events="inserted")}
                """,
                stream_id, track_id, reason, first_seen, last_seen, list(box), quality, detection_score,
                subject, similarity, crop_path, frame_path, media_bytes, sighting_id)
            event = _event(row)
            await connection.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, event.to_payload())
        return event

    async def delete_events_before(self, cutoff: datetime) -> list[str]:
        """Delete the events created before ``cutoff``; returns the paths of their images."""
        rows = await self._pool.fetch(
            "DELETE FROM video_events WHERE created_at < $1 RETURNING crop_path, frame_path", cutoff)
        return [path for row in rows for path in (row["crop_path"], row["frame_path"]) if path]

    async def get_event(self, event_id: int) -> StoredEvent:
        row = await self._pool.fetchrow(f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM.format(events='video_events')} "
                                       "WHERE e.id = $1", event_id)
        if row is None:
            raise NotFound(f"video event {event_id} not found")
        return _event(row)

    async def list_events(self, *, owner_service_id: int | None = None, stream_id: int | None = None,
                          subject: str | None = None, unknown: bool | None = None, since: datetime | None = None,
                          after_id: int | None = None, limit: int = 100, oldest_first: bool = False) -> list[StoredEvent]:
        """Events matching every given filter, newest first (or oldest first), at most ``limit``.

        ``owner_service_id`` keeps the events of that video service's streams; ``since`` compares
        with the time the event was created; ``after_id`` keeps ids greater than it.
        """
        conditions, args = [], []

        def where(sql: str, value) -> None:
            args.append(value)
            conditions.append(sql.format(f"${len(args)}"))

        if owner_service_id is not None:
            where("e.stream_id IN (SELECT id FROM video_streams WHERE owner_service_id = {})", owner_service_id)
        if stream_id is not None:
            where("e.stream_id = {}", stream_id)
        if subject is not None:
            where("e.subject = {}", subject)
        if unknown is not None:
            conditions.append("e.subject IS NULL" if unknown else "e.subject IS NOT NULL")
        if since is not None:
            where("e.created_at >= {}", since)
        if after_id is not None:
            where("e.id > {}", after_id)
        args.append(limit)
        clause = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self._pool.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM.format(events='video_events')} {clause} "
            f"ORDER BY e.id {'ASC' if oldest_first else 'DESC'} LIMIT ${len(args)}", *args)
        return [_event(row) for row in rows]
