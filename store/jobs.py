"""Records of bulk jobs (enrollment, migration) in PostgreSQL, over the control plane's pool.

A job is created ``pending`` by whoever starts it, set ``running`` with its total when it starts,
updated with its progress (which is also its heartbeat) while it runs, and finished ``succeeded`` or
``failed`` with its error. A ``running`` job whose heartbeat is older than :data:`STALE_AFTER` has
lost its process (killed, node lost): :attr:`Job.lost` says so; running the same job again resumes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import asyncpg

from store.errors import NotFound

JOB_KINDS = ("enroll", "migrate")
STALE_AFTER = timedelta(seconds=120)
_COLUMNS = ("id, kind, service_id, input, policy, options, status, total, processed, counts, report_path, "
            "error, created_at, started_at, finished_at, updated_at")


@dataclass(frozen=True)
class Job:
    """One bulk job. ``counts`` maps an outcome (``enrolled``, ``no_face``, ...) to its number of inputs."""

    id: int
    kind: str
    service_id: int
    input: str
    policy: str | None
    options: dict
    status: str
    total: int | None
    processed: int
    counts: dict[str, int]
    report_path: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @property
    def lost(self) -> bool:
        """Running, but without a heartbeat for :data:`STALE_AFTER`: its process is gone."""
        return self.status == "running" and datetime.now(timezone.utc) - self.updated_at > STALE_AFTER


def _job(row: asyncpg.Record) -> Job:
    values = dict(row)
    values["options"] = json.loads(values["options"])
    values["counts"] = json.loads(values["counts"])
    return Job(**values)


class JobStore:
    """Job rows over an asyncpg pool (e.g. :attr:`store.control.ControlPlane.pool`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, kind: str, service_id: int, input: str, policy: str | None = None,
                     options: dict | None = None) -> Job:
        """A new ``pending`` job; :class:`NotFound` for a missing service."""
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}: expected one of {', '.join(JOB_KINDS)}")
        try:
            row = await self._pool.fetchrow(
                f"""
                INSERT INTO jobs (kind, service_id, input, policy, options) VALUES ($1, $2, $3, $4, $5::jsonb)
                RETURNING {_COLUMNS}
                """,
                kind, service_id, input, policy, json.dumps(options or {}),
            )
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(f"service {service_id} not found") from None
        return _job(row)

    async def start(self, job_id: int, total: int | None, report_path: str | None = None) -> None:
        """Mark the job running with its number of inputs."""
        await self._pool.execute(
            """
            UPDATE jobs SET status = 'running', total = $2, report_path = $3, started_at = now(), updated_at = now()
            WHERE id = $1
            """,
            job_id, total, report_path,
        )

    async def progress(self, job_id: int, processed: int, counts: dict[str, int]) -> None:
        """Record progress; this is also the job's heartbeat."""
        await self._pool.execute(
            "UPDATE jobs SET processed = $2, counts = $3::jsonb, updated_at = now() WHERE id = $1",
            job_id, processed, json.dumps(counts),
        )

    async def heartbeat(self, job_id: int) -> None:
        """Show that the job is alive while it makes no countable progress."""
        await self._pool.execute("UPDATE jobs SET updated_at = now() WHERE id = $1", job_id)

    async def finish(self, job_id: int, processed: int, counts: dict[str, int], error: str | None = None) -> Job:
        """Mark the job ``succeeded``, or ``failed`` with ``error``; return it."""
        row = await self._pool.fetchrow(
            f"""
            UPDATE jobs SET status = $4, processed = $2, counts = $3::jsonb, error = $5,
                            finished_at = now(), updated_at = now()
            WHERE id = $1 RETURNING {_COLUMNS}
            """,
            job_id, processed, json.dumps(counts), "failed" if error else "succeeded", error,
        )
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return _job(row)

    async def get(self, job_id: int) -> Job:
        """The job ``job_id``; :class:`NotFound` if missing."""
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE id = $1", job_id)
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return _job(row)

    async def list(self, service_id: int | None = None, limit: int | None = 100) -> list[Job]:
        """The newest jobs first, of one service when given (``limit`` None: all of them)."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM jobs WHERE $1::bigint IS NULL OR service_id = $1 ORDER BY id DESC LIMIT $2",
            service_id, limit,
        )
        return [_job(row) for row in rows]
