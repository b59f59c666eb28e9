"""How commands run bulk jobs: Ray joined (``FACES_RAY_ADDRESS`` / ``RAY_ADDRESS``, else a local one),
bad input printed with exit status 2, and a live progress bar on stderr."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from batch_jobs.errors import JobInputError
from faces_settings import Settings, get_settings


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


def run_job_command(job: Callable[[Settings, argparse.Namespace], Awaitable[int]], args: argparse.Namespace) -> int:
    """Run ``await job(settings, args)`` with Ray joined: its status, or 2 for bad input (printed).

    The job's own bar replaces Ray Data's console bars (its progress still shows in the dashboard),
    and Ray's console logs are quieted unless ``faces -v`` (:mod:`faces_cli.console`)."""
    import ray
    from ray.data import DataContext

    from batch_jobs.runtime import connect_ray
    from faces_cli.console import quiet_ray

    settings = get_settings()
    DataContext.get_current().enable_progress_bars = False
    owns_ray = connect_ray(settings, quiet_ray(args.verbose))
    try:
        return asyncio.run(job(settings, args))
    except JobInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if owns_ray:
            ray.shutdown()
