"""Keeps a job's PostgreSQL record current while it runs: total, progress, heartbeat, outcome."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from outbound import redact
from store.jobs import JobStore

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None, dict[str, int]], None]
HEARTBEAT_S = 10.0


class JobTracker:
    """``async with JobTracker(jobs, job_id) as tracker:`` around a job's work.

    :meth:`update` calls ``on_progress`` (the command line's progress bar) every time and writes to
    PostgreSQL at most every ``every_s`` seconds. A heartbeat task keeps ``updated_at`` fresh while
    the job works without countable progress. On exit the job is finished: ``succeeded``, or
    ``failed`` with the exception (which is not suppressed; URL credentials masked in the record).
    """

    def __init__(self, jobs: JobStore, job_id: int, on_progress: ProgressCallback | None = None,
                 every_s: float = 1.0):
        self.jobs = jobs
        self.job_id = job_id
        self.on_progress = on_progress
        self.every_s = every_s
        self.total: int | None = None
        self.processed = 0
        self.counts: dict[str, int] = {}
        self._written = 0.0
        self._heartbeat: asyncio.Task | None = None

    async def __aenter__(self) -> "JobTracker":
        self._heartbeat = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, exc_type, exc, traceback) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        error = None
        if exc is not None:
            error = redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            log.error("job %d failed: %s", self.job_id, error)
        await self.jobs.finish(self.job_id, self.processed, self.counts, error)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.jobs.heartbeat(self.job_id)
            except Exception:  # a missed heartbeat must not fail the job
                log.warning("job %d: heartbeat failed", self.job_id, exc_info=True)

    async def start(self, total: int | None, report_path: str | None = None) -> None:
        self.total = total
        await self.jobs.start(self.job_id, total, report_path)
        if self.on_progress:
            self.on_progress(0, total, {})

    async def update(self, processed: int, counts: dict[str, int]) -> None:
        self.processed, self.counts = processed, dict(counts)
        if self.on_progress:
            self.on_progress(processed, self.total, self.counts)
        if time.monotonic() - self._written >= self.every_s:
            self._written = time.monotonic()
            await self.jobs.progress(self.job_id, processed, self.counts)
