"""Subject changes in progress: the PostgreSQL half of deleting and renaming a subject.

A subject's faces live in the index shards and its row in PostgreSQL, and no transaction spans both.
So a delete or a rename is three steps: :meth:`IntentStore.begin_delete` / :meth:`begin_rename`
record the intent (a rename also creates the new subject row, so that faces never carry a name
without a row), the caller changes the shards, and :meth:`IntentStore.finish` removes the old
subject row together with the intent. A failure at any point leaves the old row and the intent in
place: a retry finds the subject and repeats the (idempotent) steps, and
:meth:`IntentStore.pending` lists what a repair must finish.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from store.errors import Conflict, NotFound


@dataclass(frozen=True)
class Intent:
    """An unfinished change of ``subject``: ``delete``, or ``rename`` to ``new_name``."""

    subject: str
    action: str
    new_name: str | None


class IntentStore:
    """The ``gallery_intents`` table over an asyncpg pool (``ControlPlane.pool``)."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def _record(self, connection: asyncpg.Connection, service_id: int, subject: str, action: str,
                      new_name: str | None) -> datetime:
        """Lock the subject's row and record the intent; NotFound if the subject is missing, Conflict
        if another change of it is unfinished."""
        found = await connection.fetchval(
            "SELECT created_at FROM subjects WHERE service_id = $1 AND name = $2 FOR UPDATE", service_id, subject)
        if found is None:
            raise NotFound(f"subject {subject!r} not found")
        earlier = await connection.fetchrow(
            "SELECT action, new_name FROM gallery_intents WHERE service_id = $1 AND subject = $2",
            service_id, subject)
        if earlier is not None and (earlier["action"], earlier["new_name"]) != (action, new_name):
            undone = "delete" if earlier["action"] == "delete" else f"rename to {earlier['new_name']!r}"
            raise Conflict(f"an earlier {undone} of subject {subject!r} did not finish: repeat it first")
        await connection.execute(
            "INSERT INTO gallery_intents (service_id, subject, action, new_name) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING", service_id, subject, action, new_name)
        return found

    async def begin_delete(self, service_id: int, subject: str) -> None:
        """Record that ``subject`` is being deleted; :class:`NotFound` if it is missing."""
        async with self._pool.acquire() as connection, connection.transaction():
            await self._record(connection, service_id, subject, "delete", None)

    async def begin_delete_all(self, service_id: int) -> None:
        """Record that every subject of the service is being deleted."""
        await self._pool.execute(
            """
            INSERT INTO gallery_intents (service_id, subject, action, new_name)
            SELECT service_id, name, 'delete', NULL FROM subjects WHERE service_id = $1
            ON CONFLICT (service_id, subject) DO UPDATE SET action = 'delete', new_name = NULL
            """, service_id)

    async def begin_rename(self, service_id: int, old: str, new: str) -> None:
        """Record that ``old`` is being renamed to ``new`` and make sure ``new``'s row exists (with
        ``old``'s creation time when it is new; an existing ``new`` is merged into)."""
        async with self._pool.acquire() as connection, connection.transaction():
            created_at = await self._record(connection, service_id, old, "rename", new)
            await connection.execute(
                "INSERT INTO subjects (service_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                service_id, new, created_at)

    async def finish(self, service_id: int, subject: str) -> None:
        """The shards are done: remove ``subject``'s row and its intent, in one transaction."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("DELETE FROM subjects WHERE service_id = $1 AND name = $2", service_id, subject)
            await connection.execute(
                "DELETE FROM gallery_intents WHERE service_id = $1 AND subject = $2", service_id, subject)

    async def finish_delete_all(self, service_id: int) -> int:
        """The shards are empty: remove every subject row and intent of the service; how many subjects."""
        async with self._pool.acquire() as connection, connection.transaction():
            status = await connection.execute("DELETE FROM subjects WHERE service_id = $1", service_id)
            await connection.execute("DELETE FROM gallery_intents WHERE service_id = $1", service_id)
        return int(status.split()[-1])

    async def pending(self, service_id: int) -> list[Intent]:
        """The service's unfinished changes, oldest first."""
        rows = await self._pool.fetch(
            "SELECT subject, action, new_name FROM gallery_intents WHERE service_id = $1 ORDER BY created_at, subject",
            service_id)
        return [Intent(row["subject"], row["action"], row["new_name"]) for row in rows]
