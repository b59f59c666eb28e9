"""``faces enroll | migrate``: bulk jobs on Ray Data (see :mod:`batch_jobs.enroll`, :mod:`batch_jobs.migrate`).

Each command joins Ray (``FACES_RAY_ADDRESS`` / ``RAY_ADDRESS``, else a local one), opens the control
plane, records a job, runs it with a live progress bar (images/s, ETA) and prints a summary. Exit
status: 0 done, 2 it could not start (bad input, unknown service); a failed job raises (status 1)
after recording its error in the job row. ``python -m faces_cli.main enroll ...`` is the entry point
for ``ray job submit``.
"""

from __future__ import annotations

import argparse

from batch_jobs.outcomes import OnMultiple
from faces_cli.job_runs import ProgressBar, run_job_command
from faces_cli.service_names import add_service_argument
from faces_settings import Settings


async def _enroll(settings: Settings, args: argparse.Namespace) -> int:
    from batch_jobs.enroll import EnrollSpec, run_enroll
    from batch_jobs.locations import check_input
    from batch_jobs.report import summary
    from batch_jobs.runtime import control_plane
    from batch_jobs.tracking import JobTracker
    from faces_cli.service_names import resolve_service
    from outbound import redact
    from store.jobs import JobStore

    spec = EnrollSpec(args.path, args.manifest, OnMultiple(args.on_multiple), args.report)
    async with control_plane(settings) as control:
        service = await resolve_service(control, args.service)
        location = check_input(spec.input, spec.manifest)
        jobs = JobStore(control.pool)
        job = await jobs.create("enroll", service.id, redact(location.address), spec.on_multiple.value,
                                {"manifest": spec.manifest})
        print(f"job {job.id}: enrolling {location.uri} into service {service.name!r} ({service.id})", flush=True)
        bar = ProgressBar(not args.quiet, "img")
        try:
            async with JobTracker(jobs, job.id, bar.update) as tracker:
                result = await run_enroll(settings, control, tracker, service, spec)
        finally:
            bar.close()
    print(summary(result.counts, result.seconds))
    print(f"report: {result.report}")
    return 0


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from batch_jobs.migrate import run_migrate
    from batch_jobs.model_choice import target_model
    from batch_jobs.runtime import control_plane
    from batch_jobs.tracking import JobTracker
    from faces_cli.service_names import resolve_service
    from store.jobs import JobStore

    async with control_plane(settings) as control:
        service = await resolve_service(control, args.service)
        model = target_model(args.model, service.model)
        jobs = JobStore(control.pool)
        job = await jobs.create("migrate", service.id, model)
        print(f"job {job.id}: re-embedding the faces of service {service.name!r} ({service.id}) with {model}",
              flush=True)
        bar = ProgressBar(not args.quiet, "face")
        try:
            async with JobTracker(jobs, job.id, bar.update) as tracker:
                result = await run_migrate(settings, control, tracker, service, model)
        finally:
            bar.close()
    print(f"{result.faces} faces re-embedded with {result.model} in {result.seconds:.1f} s; "
          f"{result.shards} shard(s) switched")
    return 0


def enroll_command(args: argparse.Namespace) -> int:
    return run_job_command(_enroll, args)


def migrate_command(args: argparse.Namespace) -> int:
    return run_job_command(_migrate, args)


def add_parsers(subparsers) -> None:
    enroll = subparsers.add_parser("enroll", help="enroll a folder tree or a manifest of images into a recognition "
                                                  "service (Ray Data; FACES_RAY_ADDRESS to use a cluster)")
    enroll.add_argument("path", help="folder with one sub-folder per subject, or with --manifest a CSV, JSON-lines "
                                     "or Parquet manifest (columns path or uri, subject, optional face_id); "
                                     "a local path or a URI such as s3://bucket/prefix")
    add_service_argument(enroll)
    enroll.add_argument("--manifest", action="store_true", help="PATH is a manifest, not a folder tree")
    enroll.add_argument("--on-multiple", choices=[policy.value for policy in OnMultiple], default="largest",
                        help="images with several faces: enroll the largest (default), reject the image, or "
                             "enroll all faces")
    enroll.add_argument("--report", default=None, help="report of every input (.parquet, or .jsonl); default "
                                                       "<data dir>/jobs/<job id>/report.parquet")
    enroll.add_argument("--quiet", action="store_true", help="no progress bar")
    enroll.set_defaults(handler=enroll_command)

    migrate = subparsers.add_parser("migrate", help="re-embed every face of a service from its stored crops")
    add_service_argument(migrate)
    migrate.add_argument("--model", default=None, help="embedding model NAME or NAME@VERSION: sface, dlib-resnet or fusion; another model than "
                         "the service's switches the service to it (default: the service's own)")
    migrate.add_argument("--quiet", action="store_true", help="no progress bar")
    migrate.set_defaults(handler=migrate_command)
