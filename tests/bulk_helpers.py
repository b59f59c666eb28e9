"""Helpers of the bulk-job tests: run jobs in process or through the API, read what they stored."""

from __future__ import annotations

import asyncio
import time

import pyarrow as pa

from batch_jobs.enroll import EnrollResult, EnrollSpec, run_enroll
from batch_jobs.report import read_report
from batch_jobs.tracking import JobTracker
from facecore.embed import embedding_model
from facecore.models import SFACE
from faces_settings import Settings
from serve_app.client import FaceClient
from store.control import ControlPlane
from faceindex.layout import ServiceLayout
from store.jobs import JobStore

JOB_TIMEOUT_S = 240


def enroll_in_process(settings: Settings, service_id: int, spec: EnrollSpec) -> tuple[EnrollResult, pa.Table]:
    """Record and run an enrollment job in this process (the test session's Ray); its result and report."""

    async def run() -> EnrollResult:
        control = await ControlPlane.connect(settings.postgres_dsn)
        try:
            service = await control.get_service(service_id)
            jobs = JobStore(control.pool)
            job = await jobs.create("enroll", service_id, spec.input, spec.on_multiple.value,
                                    {"manifest": spec.manifest})
            async with JobTracker(jobs, job.id) as tracker:
                return await run_enroll(settings, control, tracker, service, spec)
        finally:
            await control.close()

    result = asyncio.run(run())
    return result, read_report(spec.report or result.report)


def wait_for_job(admin: FaceClient, job_id: int, timeout_s: float = JOB_TIMEOUT_S) -> dict:
    """Poll the job's status until it ends; the final status."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = admin.get_job(job_id)
        if job["status"] in ("succeeded", "failed", "lost"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s: {admin.get_job(job_id)}")


def stored_faces(settings: Settings, service_id: int, shards: int = 1, model: str = SFACE.name) -> list[dict]:
    """Every stored face row (face_id, subject, source, model, embedding) of a service (of embedding
    model ``model``), read from LanceDB."""
    rows = []
    for shard in range(shards):
        table = ServiceLayout(service_id, shards, model=model).open_table(
            settings.faces_uri, shard, embedding_model(model).embedding_dim)
        for batch in table.batches(["face_id", "subject", "source", "model", "embedding"]):
            rows.extend(batch.to_pylist())
    return rows
