"""Admin API: applications, their services (with API keys) and service statistics.

Callers: the admin token, or a UI user with the role each route needs in the application (global
owners and administrators hold every application; a user sees only the applications they have a role in).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends

from actors.index_shard import ShardUnavailable
from batch_jobs.job_files import delete_job_files
from serve_app.auth import require_principal
from serve_app.context import AppContext, request_context
from serve_app.errors import BAD_PARAMETER, ApiError
from serve_app.schemas import ApplicationOut, NameBody, ServiceCreate, ServiceOut, ServiceUpdate
from serve_app.sessions import Principal
from serve_app.validation import RowId
from store.control import Application, ControlPlane, Service
from store.event_media import EventMedia
from store.jobs import JobStore
from store.users import UserStore
from store.video_store import VideoStore

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
Ctx = Annotated[AppContext, Depends(request_context)]
Caller = Annotated[Principal, Depends(require_principal)]
log = logging.getLogger(__name__)


def _application(app: Application) -> ApplicationOut:
    return ApplicationOut(id=app.id, name=app.name, created_at=app.created_at.isoformat())


def _service(service: Service, api_key: str | None = None) -> ServiceOut:
    return ServiceOut(id=service.id, application_id=service.application_id, name=service.name, type=service.type,
                      similarity_threshold=service.similarity_threshold, shards=service.shards,
                      shard_replicas=service.shard_replicas, created_at=service.created_at.isoformat(), api_key=api_key)


async def _service_for(caller: Principal, service_id: int, role: str, context: AppContext) -> Service:
    """The service, if the caller holds at least ``role`` in its application (else 404 or 403)."""
    service = await (await context.control()).get_service(service_id)
    caller.require_app(service.application_id, role)
    return service


async def _start_shards(context: AppContext, service: Service) -> None:
    """Start the service's shard actors now, not on its first request. The answer waits for them at
    most a shard call's timeout: a service created (or changed) is answered as such, and its one-time
    API key shown, while shards slow to start (a busy node) go on starting; its requests get 503 until
    they serve."""
    try:
        await context.shards(service).count()
    except ShardUnavailable as exc:
        log.warning("the shards of service %d are still starting: %s", service.id, exc)


async def _delete_service(context: AppContext, control: ControlPlane, service: Service) -> None:
    """Delete a service with its data: its face tables and saved indexes and its bulk jobs' files (reports)
    first (a retry after a failure still finds the service), then its rows (with those of its jobs,
    streams and events), then the streams' event images (their workers stop with the rows; the video
    supervisor sweeps any image written after)."""
    streams = await VideoStore(control.pool).list_streams(service.id) if service.type == "video" else []
    if service.type == "recognition":
        await context.shards(service).drop()
        await (await context.unknown_faces(service)).drop()
        context.forget_shards(service.id)
    for job in await JobStore(control.pool).list(service.id, limit=None):
        await asyncio.to_thread(delete_job_files, context.settings, job)
    await control.delete_service(service.id)
    media = EventMedia(context.settings.video_media_uri)
    for stream in streams:
        await asyncio.to_thread(media.delete_stream, stream.id)


@router.post("/applications", response_model=ApplicationOut, status_code=201)
async def create_application(body: NameBody, caller: Caller, context: Ctx):
    """Create an application; a UI user who is not a global administrator becomes its owner."""
    control = await context.control()
    application = await control.create_application(body.name)
    if not caller.is_admin:
        await UserStore(control.pool).set_application_role(application.id, caller.user.id, "owner")
    return _application(application)


@router.get("/applications", response_model=list[ApplicationOut])
async def list_applications(caller: Caller, context: Ctx):
    """The applications the caller may see."""
    return [_application(app) for app in await (await context.control()).list_applications()
            if caller.app_role(app.id) is not None]


@router.put("/applications/{application_id}", response_model=ApplicationOut)
async def rename_application(application_id: RowId, body: NameBody, caller: Caller, context: Ctx):
    caller.require_app(application_id, "owner")
    return _application(await (await context.control()).rename_application(application_id, body.name))


@router.delete("/applications/{application_id}", response_model=ApplicationOut)
async def delete_application(application_id: RowId, caller: Caller, context: Ctx):
    """Delete an application, its services and all their faces and event images."""
    caller.require_app(application_id, "owner")
    control = await context.control()
    application = await control.get_application(application_id)
    for service in await control.list_services(application_id):
        await _delete_service(context, control, service)
    await control.delete_application(application_id)
    return _application(application)


@router.post("/applications/{application_id}/services", response_model=ServiceOut, status_code=201)
async def create_service(application_id: RowId, body: ServiceCreate, caller: Caller, context: Ctx):
    """Create a service; the response carries its API key (shown only here and on regeneration)."""
    caller.require_app(application_id, "administrator")
    service, api_key = await (await context.control()).create_service(
        application_id, body.name, body.type, body.similarity_threshold,
        body.shards or context.settings.default_shards, body.shard_replicas)
    if service.type == "recognition":
        await _start_shards(context, service)
    return _service(service, api_key)


@router.get("/applications/{application_id}/services", response_model=list[ServiceOut])
async def list_services(application_id: RowId, caller: Caller, context: Ctx):
    caller.require_app(application_id, "user")
    control = await context.control()
    await control.get_application(application_id)
    return [_service(s) for s in await control.list_services(application_id)]


@router.get("/services/{service_id}", response_model=ServiceOut)
async def get_service(service_id: RowId, caller: Caller, context: Ctx):
    return _service(await _service_for(caller, service_id, "user", context))


@router.put("/services/{service_id}", response_model=ServiceOut)
async def update_service(service_id: RowId, body: ServiceUpdate, caller: Caller, context: Ctx):
    """Rename a service, set its default similarity threshold and/or its actors per index shard
    (``null``: back to the platform's default)."""
    control = await context.control()
    service = await _service_for(caller, service_id, "administrator", context)
    if body.name is not None:
        service = await control.rename_service(service_id, body.name)
    if "similarity_threshold" in body.model_fields_set:
        service = await control.set_similarity_threshold(service_id, body.similarity_threshold)
    if "shard_replicas" in body.model_fields_set:
        service = await control.set_shard_replicas(service_id, body.shard_replicas)
        if service.type == "recognition":
            # its shards start with the new count now (replicas added, or extra ones stopped), even where
            # this replica still holds a group of that count from before a change made through another;
            # other processes open them so at their next call for the service
            context.forget_shards(service.id)
            await _start_shards(context, service)
    return _service(service)


@router.delete("/services/{service_id}", response_model=ServiceOut)
async def delete_service(service_id: RowId, caller: Caller, context: Ctx):
    """Delete a service and all its faces and event images."""
    control = await context.control()
    service = await _service_for(caller, service_id, "administrator", context)
    await _delete_service(context, control, service)
    return _service(service)


@router.post("/services/{service_id}/key", response_model=ServiceOut)
async def regenerate_key(service_id: RowId, caller: Caller, context: Ctx):
    """A new API key for the service; the old one stops working at once."""
    control = await context.control()
    await _service_for(caller, service_id, "administrator", context)
    api_key = await control.regenerate_key(service_id)
    return _service(await control.get_service(service_id), api_key)


@router.get("/services/{service_id}/stats")
async def service_stats(service_id: RowId, caller: Caller, context: Ctx):
    """Requests and errors per endpoint and day."""
    control = await context.control()
    service = await _service_for(caller, service_id, "user", context)
    await context.flush_stats()
    stats = await control.service_stats(service_id)
    faces = await context.shards(service).count() if service.type == "recognition" else None
    return {"service_id": service_id, "faces": faces, "requests": stats}


def _search_service(service: Service) -> Service:
    if service.type != "recognition":
        raise ApiError(400, f"service {service.id} is a {service.type} service; only recognition services have "
                            "search indexes", BAD_PARAMETER)
    return service


@router.get("/services/{service_id}/index")
async def index_stats(service_id: RowId, caller: Caller, context: Ctx):
    """Per shard: faces, RAM and disk bytes (per face too), search mode, indexed and unindexed faces."""
    service = _search_service(await _service_for(caller, service_id, "user", context))
    shards = await context.shards(service).stats()
    faces = sum(s["faces"] for s in shards)
    ram = sum(s["ram_bytes"] for s in shards)
    return {"service_id": service_id, "faces": faces, "ram_bytes": ram,
            "ram_bytes_per_face": ram / faces if faces else None, "shards": shards}


@router.post("/services/{service_id}/index/rebuild", status_code=202)
async def rebuild_index(service_id: RowId, caller: Caller, context: Ctx):
    """Start rebuilding every shard's approximate index; searches go on. Follow it with GET .../index."""
    service = _search_service(await _service_for(caller, service_id, "administrator", context))
    context.start_background(context.shards(service).build_indexes())
    return {"service_id": service_id, "shards": service.shards, "status": "started"}
