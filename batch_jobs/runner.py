"""Runs bulk jobs inside the cluster for the admin API: one detached actor per job.

The actor reserves no CPU (its Ray Data stages reserve their own), outlives the HTTP request and the
ingress replica that started it, records progress and outcome in the job's row, and exits when the
job ends. Heavy imports (Ray Data, the pipeline) happen in the actor, not in the ingress.

These jobs are confined by the outbound policy (:mod:`batch_jobs.locations`). Their rows hold the
input and report locations with credentials masked; the locations as given reach the actor as its
arguments.
"""

from __future__ import annotations

import asyncio

import ray

from actors.index_shard import NAMESPACE
from faces_settings import Settings


async def run_job(settings: Settings, job_id: int, input: str | None = None, report: str | None = None) -> None:
    """Run recorded job ``job_id`` to its end (its row says what to do; ``input`` and ``report``, when
    given, are its locations with their credentials)."""
    from batch_jobs.enroll import EnrollSpec, run_enroll
    from batch_jobs.migrate import run_migrate
    from batch_jobs.outcomes import OnMultiple
    from batch_jobs.runtime import control_plane, require_recognition
    from batch_jobs.tracking import JobTracker
    from store.jobs import JobStore

    async with control_plane(settings) as control:
        jobs = JobStore(control.pool)
        job = await jobs.get(job_id)
        async with JobTracker(jobs, job_id) as tracker:
            service = require_recognition(await control.get_service(job.service_id))
            if job.kind == "enroll":
                spec = EnrollSpec(input or job.input, bool(job.options.get("manifest")), OnMultiple(job.policy),
                                  report or job.options.get("report"), outbound=settings.outbound_policy())
                await run_enroll(settings, control, tracker, service, spec)
            else:
                await run_migrate(settings, control, tracker, service, job.input)


@ray.remote(num_cpus=0, max_restarts=0)
class JobRunner:
    """A detached actor that runs one job and exits."""

    def run(self, settings: Settings, job_id: int, input: str | None, report: str | None) -> None:
        try:
            asyncio.run(run_job(settings, job_id, input, report))
        finally:
            ray.actor.exit_actor()


def start_job(settings: Settings, job_id: int, input: str | None = None, report: str | None = None) -> None:
    """Start recorded job ``job_id`` in the cluster and return at once (``input``, ``report``: see
    :func:`run_job`)."""
    runner = JobRunner.options(name=f"job-{job_id}", namespace=NAMESPACE, lifetime="detached").remote()
    runner.run.remote(settings, job_id, input, report)
