"""Command lines of the bulk jobs, shared by ``faces enroll | migrate`` and ``python -m batch_jobs.*``.

Each command joins Ray (``FACES_RAY_ADDRESS`` / ``RAY_ADDRESS``, else a local one), opens the control
plane, records a job, runs it with a live progress bar (images/s, ETA) and prints a summary. Exit
status: 0 done, 2 it could not start (bad input, unknown service); a failed job raises (status 1)
after recording its error in the job row.
"""

from __future__ import annotations

import argparse
import logging
import sys

from batch_jobs.outcomes import OnMultiple
from faces_settings import Settings


class ProgressBar:
    """A tqdm bar on stderr fed by a job's progress callback; disabled when not wanted."""

    def __init__(self, enabled: bool, unit: str):
        from tqdm import tqdm

        self.bar = tqdm(total=None, unit=unit, disable=not enabled, dynamic_ncols=True, file=sys.stderr)

    def update(self, processed: int, total: int | None, counts: dict[str, int]) -> None:
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(processed - self.bar.n)
        self.bar.set_postfix(faces=counts.get("faces", 0), refresh=False)

    def close(self) -> None:
        self.bar.close()


def add_enroll_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="folder with one sub-folder per subject, or with --manifest a CSV, JSON-lines "
                                     "or Parquet manifest (columns path or uri, subject, optional face_id); "
                                     "a local path or a URI such as s3://bucket/prefix")
    parser.add_argument("--service", required=True, help="recognition service: NAME, APP/SERVICE or its id")
    parser.add_argument("--manifest", action="store_true", help="PATH is a manifest, not a folder tree")
    parser.add_argument("--on-multiple", choices=[policy.value for policy in OnMultiple], default="largest",
                        help="images with several faces: enroll the largest (default), reject the image, or "
                             "enroll all faces")
    parser.add_argument("--report", default=None, help="report of every input (.parquet, or .jsonl); default "
                                                       "<data dir>/jobs/<job id>/report.parquet")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", required=True, help="recognition service: NAME, APP/SERVICE or its id")
    parser.add_argument("--model", default=None, help="embedder model NAME@VERSION (default: the platform's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _quiet_ray_data(enabled_bar: bool) -> None:
    """Our bar replaces Ray Data's console bars (its progress still shows in the dashboard)."""
    if enabled_bar:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False


async def _enroll(settings: Settings, args: argparse.Namespace) -> int:
    from batch_jobs.enroll import EnrollSpec, run_enroll
    from batch_jobs.locations import check_input
    from batch_jobs.report import summary
    from batch_jobs.runtime import control_plane, resolve_service
    from batch_jobs.tracking import JobTracker
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
    from batch_jobs.runtime import control_plane, resolve_service
    from batch_jobs.tracking import JobTracker
    from store.jobs import JobStore

    async with control_plane(settings) as control:
        service = await resolve_service(control, args.service)
        model = target_model(args.model)
        jobs = JobStore(control.pool)
        job = await jobs.create("migrate", service.id, model)
        print(f"job {job.id}: re-embedding the faces of service {service.name!r} ({service.id}) with {model}",
              flush=True)
        bar = ProgressBar(not args.quiet, "face")
        try:
            async with JobTracker(jobs, job.id, bar.update) as tracker:
                result = await run_migrate(settings, tracker, service, model)
        finally:
            bar.close()
    print(f"{result.faces} faces re-embedded with {result.model} in {result.seconds:.1f} s; "
          f"{result.shards} shard(s) switched")
    return 0


def enroll_command(args: argparse.Namespace) -> int:
    from batch_jobs.runtime import run_job_command

    _quiet_ray_data(not args.quiet)
    return run_job_command(_enroll, args)


def migrate_command(args: argparse.Namespace) -> int:
    from batch_jobs.runtime import run_job_command

    _quiet_ray_data(not args.quiet)
    return run_job_command(_migrate, args)


def _main(add_arguments, command, description: str) -> int:
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return command(args)


def enroll_main() -> int:
    """``python -m batch_jobs.enroll``: the entry point for ``ray job submit``."""
    return _main(add_enroll_arguments, enroll_command, "Bulk enrollment into a recognition service")


def migrate_main() -> int:
    """``python -m batch_jobs.migrate``."""
    return _main(add_migrate_arguments, migrate_command, "Re-embed every face of a service")

