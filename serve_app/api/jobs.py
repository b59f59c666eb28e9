"""Admin API of bulk jobs: start an enrollment or a migration in the cluster, follow its progress.

Starting a job checks what can be checked at once (the service, the input's existence, the policy,
the model, and that the outbound policy allows the input and the report: local paths under
``FACES_FILE_ROOTS`` outside the data dir, storage hosts that resolve to public addresses or
``FACES_ALLOWED_NETWORKS``) and answers 400/404 for mistakes; the work then runs in a detached actor
(:mod:`batch_jobs.runner`), not in the request, and its row in PostgreSQL carries its progress.
Locations are recorded and shown with their credentials masked.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from batch_jobs.errors import JobInputError
from batch_jobs.locations import allowed, check_input
from batch_jobs.model_choice import embedding_models, target_model
from batch_jobs.report import is_json_report, open_report
from batch_jobs.runner import start_job
from serve_app.auth import require_admin
from serve_app.context import AppContext, request_context
from serve_app.errors import BAD_PARAMETER, CONFLICT, NOT_FOUND, WRONG_SERVICE_TYPE, ApiError, ServiceUnavailable
from outbound import redact
from serve_app.schemas import EnrollJobCreate, JobOut, MigrateJobCreate
from serve_app.validation import RowId
from store.control import Service
from store.jobs import Job, JobStore

router = APIRouter(prefix="/api/v1/admin/jobs", tags=["jobs"], dependencies=[Depends(require_admin)])
Ctx = Annotated[AppContext, Depends(request_context)]


def job_out(job: Job) -> JobOut:
    """A job row with its derived figures: progress fraction, speed, time left."""
    progress = job.processed / job.total if job.total else None
    rate = eta = None
    if job.started_at is not None and job.processed:
        elapsed = ((job.finished_at or job.updated_at) - job.started_at).total_seconds()
        rate = job.processed / elapsed if elapsed > 0 else None
    if rate and job.total is not None and job.status == "running":
        eta = max(0, job.total - job.processed) / rate
    options = {name: redact(value) if isinstance(value, str) else value for name, value in job.options.items()}
    return JobOut(id=job.id, kind=job.kind, service_id=job.service_id, input=redact(job.input), policy=job.policy,
                  options=options, status="lost" if job.lost else job.status, total=job.total,
                  processed=job.processed, progress=progress, images_per_s=rate, eta_s=eta, counts=job.counts,
                  report_path=redact(job.report_path), error=redact(job.error),
                  created_at=job.created_at.isoformat(),
                  started_at=job.started_at.isoformat() if job.started_at else None,
                  finished_at=job.finished_at.isoformat() if job.finished_at else None,
                  updated_at=job.updated_at.isoformat())


async def _recognition_service(context: AppContext, service_id: int) -> Service:
    service = await (await context.control()).get_service(service_id)
    if service.type != "recognition":
        raise ApiError(400, f"service {service_id} is a {service.type} service; bulk jobs need a recognition "
                            "service", WRONG_SERVICE_TYPE)
    return service


@router.post("/enroll", response_model=JobOut, status_code=202)
async def start_enroll(body: EnrollJobCreate, context: Ctx):
    """Enroll a folder tree or a manifest into a recognition service; returns the started job."""
    if (body.path is None) == (body.manifest is None):
        raise ApiError(400, "give exactly one of 'path' (a folder of subject folders) or 'manifest'", BAD_PARAMETER)
    service = await _recognition_service(context, body.service_id)
    manifest = body.manifest is not None
    policy = context.settings.outbound_policy()
    try:
        location = await asyncio.to_thread(check_input, body.manifest or body.path, manifest, policy)
        if body.report:
            await asyncio.to_thread(allowed, body.report, policy)
    except JobInputError as exc:
        raise ApiError(400, str(exc), BAD_PARAMETER) from None
    options = {"manifest": manifest, **({"report": redact(body.report)} if body.report else {})}
    job = await JobStore((await context.control()).pool).create("enroll", service.id, redact(location.address),
                                                                 body.on_multiple.value, options)
    start_job(context.settings, job.id, location.address, body.report)
    return job_out(job)


@router.post("/migrate", response_model=JobOut, status_code=202)
async def start_migrate(body: MigrateJobCreate, context: Ctx):
    """Re-embed every face of a recognition service from its stored crops (CompreFace's migrate)."""
    service = await _recognition_service(context, body.service_id)
    try:
        model = target_model(body.model, service.model)
    except JobInputError as exc:
        raise ApiError(400, str(exc), BAD_PARAMETER) from None
    await context.embedder.open_model.remote(embedding_models()[model])  # serving it right after the switch
    job = await JobStore((await context.control()).pool).create("migrate", service.id, model)
    start_job(context.settings, job.id)
    return job_out(job)


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: RowId, context: Ctx):
    """A job's status, counts and progress."""
    return job_out(await JobStore((await context.control()).pool).get(job_id))


REPORT_CHUNK_BYTES = 1 << 20


@router.get("/{job_id}/report", response_class=StreamingResponse,
            responses={200: {"content": {"application/vnd.apache.parquet": {}, "application/x-ndjson": {}}}})
async def download_report(job_id: RowId, context: Ctx):
    """The report of a finished enrollment job, one row per input (Parquet, or JSON lines when it was
    named so), from the data dir or the object store it was written to."""
    job = await JobStore((await context.control()).pool).get(job_id)
    if not job.report_path:
        raise ApiError(404, f"job {job_id} has no report (only enrollment jobs write one, once started)", NOT_FOUND)
    if job.status in ("pending", "running") and not job.lost:
        raise ApiError(409, f"job {job_id} is {job.status}: its report is complete once it has finished", CONFLICT)
    try:
        stream = await asyncio.to_thread(open_report, job.report_path)
    except FileNotFoundError:
        raise ApiError(404, f"the report of job {job_id} is gone ({redact(job.report_path)})", NOT_FOUND) from None
    except OSError as exc:
        raise ServiceUnavailable(redact(f"the storage of the report of job {job_id} did not answer: {exc}")) from None

    async def chunks():
        try:
            while chunk := await asyncio.to_thread(stream.read, REPORT_CHUNK_BYTES):
                yield chunk
        finally:
            stream.close()

    json_lines = is_json_report(job.report_path)
    name = f"job-{job_id}-report.{'jsonl' if json_lines else 'parquet'}"
    media_type = "application/x-ndjson" if json_lines else "application/vnd.apache.parquet"
    return StreamingResponse(chunks(), media_type=media_type,
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("", response_model=list[JobOut])
async def list_jobs(context: Ctx, service_id: RowId | None = Query(None), limit: int = Query(100, ge=1, le=1000)):
    """The newest jobs first, of one service when given."""
    return [job_out(job) for job in await JobStore((await context.control()).pool).list(service_id, limit)]
