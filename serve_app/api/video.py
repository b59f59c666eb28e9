"""Video API: streams (admin or a video service key), their events, live events over SSE.

A video service key sees and changes only the streams it created, and may watch only recognition
services of its own application; the admin token sees everything. Every change of the streams
table is followed by a reconcile of the supervisor, so it takes effect at once.

Sources and webhooks are checked against the outbound policy before they are stored: local files
only on the admin's own streams (under ``FACES_FILE_ROOTS``), hosts that resolve to public addresses
or to ``FACES_ALLOWED_NETWORKS``. A video key is told only that a location is not allowed, and sees
generic reasons for its streams' states; URLs are shown with their credentials masked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from ray import serve
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask

from actors.video_supervisor import ensure_supervisor
from facecore.embed import DEFAULT_EMBEDDING_MODEL
from facevideo.config import SOURCE_SCHEMES
from facevideo.webhooks import WEBHOOK_SCHEMES
from outbound import OutboundRefused, redact
from serve_app.auth import admin_or_service_key
from serve_app.context import AppContext, request_context
from serve_app.errors import BAD_PARAMETER, QUOTA_EXCEEDED, ApiError
from serve_app.quotas import connection_share
from serve_app.video_events import get_relay
from serve_app.video_json import event_json, stream_json
from serve_app.validation import FilterName, RowId
from serve_app.video_schemas import NULLABLE, StreamCreate, StreamUpdate
from store.control import Service
from store.errors import NotFound
from store.event_media import EventMedia
from store.video_store import StoredEvent, Stream, VideoStore

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/video", tags=["video"])
Ctx = Annotated[AppContext, Depends(request_context)]
Caller = Annotated[Service | None, Depends(admin_or_service_key("video"))]

RECONCILE_TIMEOUT_S = 15.0
REPLAY_LIMIT = 1000
SSE_PING_S = 15


async def _store(context: AppContext) -> VideoStore:
    return VideoStore((await context.control()).pool)


def _media(context: AppContext) -> EventMedia:
    return EventMedia(context.settings.video_media_uri)


async def _owned_stream(store: VideoStore, stream_id: RowId, caller: Service | None) -> Stream:
    stream = await store.get_stream(stream_id)
    if caller is not None and stream.owner_service_id != caller.id:
        raise NotFound(f"video stream {stream_id} not found")
    return stream


async def _check_watchlist(context: AppContext, service_id: int | None, caller: Service | None) -> None:
    if service_id is None:
        return
    try:
        service = await (await context.control()).get_service(service_id)
    except NotFound:
        raise ApiError(400, f"unknown watchlist service {service_id}", BAD_PARAMETER) from None
    if service.type != "recognition":
        raise ApiError(400, f"the watchlist must be a recognition service; service {service_id} is a "
                            f"{service.type} service", BAD_PARAMETER)
    if caller is not None and service.application_id != caller.application_id:
        raise ApiError(400, f"watchlist service {service_id} belongs to another application", BAD_PARAMETER)
    if service.model != DEFAULT_EMBEDDING_MODEL:
        raise ApiError(400, f"video workers embed with {DEFAULT_EMBEDDING_MODEL}; watchlist service {service_id} "
                            f"holds {service.model} embeddings", BAD_PARAMETER)


async def _check_outbound(context: AppContext, caller: Service | None, owner_service_id: int | None,
                          changes: dict) -> None:
    """Refuse a source or webhook the outbound policy does not allow (400). Local files are allowed
    only on streams of the admin (``owner_service_id`` None); only the admin gets the detail."""
    policy = context.settings.outbound_policy()
    for field, schemes in (("source_url", SOURCE_SCHEMES), ("webhook_url", WEBHOOK_SCHEMES)):
        if changes.get(field):
            try:
                await asyncio.to_thread(policy.check, changes[field], schemes, admin=owner_service_id is None)
            except OutboundRefused as exc:
                reason = redact(str(exc)) if caller is None else exc.public
                raise ApiError(400, f"{field}: {reason}", BAD_PARAMETER) from None


def _check_webhook_secret(changes: dict, webhook_url: str | None) -> None:
    if webhook_url and "webhook_secret" in changes and changes["webhook_secret"] is None:
        raise ApiError(400, "webhook_secret must not be null while webhook_url is set (leave it out to have one "
                            "generated)", BAD_PARAMETER)


async def _reconcile(context: AppContext) -> None:
    """Ask the supervisor to apply the change now (it also catches up on its own every few seconds)."""
    try:
        supervisor = ensure_supervisor(context.settings, serve.get_replica_context().app_name)
        await asyncio.wait_for(supervisor.reconcile.remote(), RECONCILE_TIMEOUT_S)
    except Exception:  # the periodic reconcile applies it later; the API call itself succeeded
        log.exception("video supervisor reconcile failed")


async def _check_streams_quota(context: AppContext, caller: Service) -> None:
    limit = (await context.service_quotas(caller.id)).streams
    if await (await context.quota_store()).streams_owned(caller.id) >= limit:
        raise ApiError(403, f"this service has its quota of {limit} video streams; delete one or ask the "
                            "administrator for a larger quota", QUOTA_EXCEEDED)


@router.post("/streams", status_code=201)
async def create_stream(body: StreamCreate, caller: Caller, context: Ctx):
    """Add a stream; its worker starts at once. The response shows the webhook secret (only here)."""
    settings = body.model_dump()
    _check_webhook_secret(body.model_dump(include=body.model_fields_set), settings["webhook_url"])
    await _check_watchlist(context, body.watchlist_service_id, caller)
    if caller is not None:
        await _check_streams_quota(context, caller)
    owner = caller.id if caller else None
    await _check_outbound(context, caller, owner, settings)
    if settings["webhook_url"] and not settings["webhook_secret"]:
        settings["webhook_secret"] = secrets.token_urlsafe(24)
    stream = await (await _store(context)).create_stream(owner, **settings)
    await _reconcile(context)
    return stream_json(stream, show_secret=True, detail=caller is None)


@router.get("/streams")
async def list_streams(caller: Caller, context: Ctx):
    streams = await (await _store(context)).list_streams(caller.id if caller else None)
    return [stream_json(stream, detail=caller is None) for stream in streams]


@router.get("/streams/{stream_id}")
async def get_stream(stream_id: RowId, caller: Caller, context: Ctx):
    return stream_json(await _owned_stream(await _store(context), stream_id, caller), detail=caller is None)


@router.patch("/streams/{stream_id}")
async def update_stream(stream_id: int, body: StreamUpdate, caller: Caller, context: Ctx):
    """Change some settings; the stream's worker is replaced by one with the new settings."""
    store = await _store(context)
    current = await _owned_stream(store, stream_id, caller)
    changes = {name: value for name, value in body.model_dump(exclude_unset=True).items()
               if value is not None or name in NULLABLE}
    _check_webhook_secret(changes, changes.get("webhook_url", current.webhook_url))
    if "watchlist_service_id" in changes:
        await _check_watchlist(context, changes["watchlist_service_id"], caller)
    await _check_outbound(context, caller, current.owner_service_id, changes)
    if changes.get("webhook_url") and "webhook_secret" not in changes and not current.webhook_secret:
        changes["webhook_secret"] = secrets.token_urlsafe(24)
    stream = await store.update_stream(stream_id, changes)
    await _reconcile(context)
    return stream_json(stream, show_secret="webhook_secret" in changes, detail=caller is None)


@router.delete("/streams/{stream_id}")
async def delete_stream(stream_id: RowId, caller: Caller, context: Ctx):
    """Stop the stream's worker and delete the stream with its events and their images."""
    store = await _store(context)
    await _owned_stream(store, stream_id, caller)
    stream = await store.delete_stream(stream_id)
    await _reconcile(context)
    await asyncio.to_thread(_media(context).delete_stream, stream_id)
    return stream_json(stream, detail=caller is None)


@router.get("/events")
async def list_events(caller: Caller, context: Ctx,
                      stream: RowId | None = Query(None, description="only this stream's events"),
                      subject: FilterName | None = Query(None, description="only events matched to this subject"),
                      unknown: bool | None = Query(None, description="true: only unknown faces; false: only matched"),
                      since: datetime | None = Query(None, description="only events created at or after (ISO 8601)"),
                      after_id: RowId | None = Query(None, ge=0, description="only events with a greater id"),
                      limit: int = Query(100, ge=1, le=1000)):
    """Events, newest first."""
    events = await (await _store(context)).list_events(
        owner_service_id=caller.id if caller else None, stream_id=stream, subject=subject, unknown=unknown,
        since=since, after_id=after_id, limit=limit)
    return [event_json(event) for event in events]


class _EventFilter:
    """The filters of one SSE client, including which streams it may see."""

    def __init__(self, store: VideoStore, caller: Service | None, stream: int | None, subject: str | None):
        self.store, self.caller, self.stream, self.subject = store, caller, stream, subject
        self._visible: dict[int, bool] = {}

    async def accepts(self, event: StoredEvent) -> bool:
        if self.stream is not None and event.stream_id != self.stream:
            return False
        if self.subject is not None and event.subject != self.subject:
            return False
        if self.caller is None:
            return True
        if event.stream_id not in self._visible:
            try:
                self._visible[event.stream_id] = (await self.store.get_stream(event.stream_id)).owner_service_id \
                    == self.caller.id
            except NotFound:
                self._visible[event.stream_id] = False
        return self._visible[event.stream_id]


def _sse(event: StoredEvent) -> dict:
    return {"id": str(event.id), "event": "video_event", "data": json.dumps(event_json(event))}


@router.get("/events/stream")
async def stream_events(caller: Caller, context: Ctx,
                        stream: RowId | None = Query(None), subject: FilterName | None = Query(None),
                        last_event_id: str | None = Header(None)):
    """Server-Sent Events: each new event as ``event: video_event`` with its JSON. Reconnect with
    ``Last-Event-ID`` to receive what was missed first."""
    store = await _store(context)
    try:
        last = int(last_event_id) if last_event_id else None
    except ValueError:
        raise ApiError(400, "Last-Event-ID must be an event id", BAD_PARAMETER) from None
    # long-lived connections hold a slot of the replica's own, far fewer than its request slots, so
    # they cannot crowd out other requests; a service's share is its quota divided among the replicas
    owner_limit = None if caller is None else connection_share(
        (await context.service_quotas(caller.id)).sse_connections, context.settings.ingress_replicas)
    release = context.sse_slots.acquire(caller.id if caller else None, owner_limit)
    relay = get_relay(context.settings.postgres_dsn)
    try:
        queue = await relay.subscribe()
    except BaseException:
        release()
        raise
    chosen = _EventFilter(store, caller, stream, subject)

    async def events():
        seen = last
        try:
            if seen is not None:
                missed = await store.list_events(owner_service_id=caller.id if caller else None, stream_id=stream,
                                                 subject=subject, after_id=seen, limit=REPLAY_LIMIT,
                                                 oldest_first=True)
                for event in missed:
                    seen = event.id
                    yield _sse(event)
            while (event := await queue.get()) is not None:
                if (seen is None or event.id > seen) and await chosen.accepts(event):
                    seen = event.id
                    yield _sse(event)
        finally:
            relay.unsubscribe(queue)
            release()

    def closed() -> None:  # also when the client left before the stream began
        relay.unsubscribe(queue)
        release()

    return EventSourceResponse(events(), ping=SSE_PING_S, background=BackgroundTask(closed))


@router.get("/events/{event_id}")
async def get_event(event_id: RowId, caller: Caller, context: Ctx):
    return event_json(await _visible_event(await _store(context), event_id, caller))


async def _visible_event(store: VideoStore, event_id: RowId, caller: Service | None) -> StoredEvent:
    event = await store.get_event(event_id)
    try:
        await _owned_stream(store, event.stream_id, caller)
    except NotFound:
        raise NotFound(f"video event {event_id} not found") from None
    return event


async def _image(context: AppContext, path: str | None, what: str, event_id: int) -> Response:
    data = await asyncio.to_thread(_media(context).read, path) if path else None
    if data is None:
        raise NotFound(f"event {event_id} has no {what}")
    return Response(content=data, media_type="image/jpeg")


@router.get("/events/{event_id}/crop", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the best shot's face crop"}})
async def event_crop(event_id: RowId, caller: Caller, context: Ctx):
    event = await _visible_event(await _store(context), event_id, caller)
    return await _image(context, event.crop_path, "crop", event_id)


@router.get("/events/{event_id}/frame", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the best shot's whole frame"}})
async def event_frame(event_id: RowId, caller: Caller, context: Ctx):
    event = await _visible_event(await _store(context), event_id, caller)
    return await _image(context, event.frame_path, "frame (the stream does not save frames)", event_id)
