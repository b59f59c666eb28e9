"""The one owner of a recognition service's gallery: every change of its subjects and faces.

Subjects are rows in PostgreSQL and faces live in the index shards; no transaction spans both, so
each change is ordered so that a failure at any step leaves a state that repeating the change (or
:func:`gallery.drift.repair`) completes:

- adding faces: the subject rows first, then the faces (a face never carries a name without a row);
- deleting a subject: an intent row, then its faces, then the subject row with the intent (a retried
  delete still finds the subject; no deleted subject is left recognisable);
- renaming: an intent and the new subject row, then the faces, then the old row with the intent (each
  shard's rename is idempotent, so a retry moves what is left).
"""

from __future__ import annotations

from collections.abc import Sequence

from actors.index_shard import ShardGroup
from store.control import ControlPlane
from store.errors import NotFound
from store.faces import FaceRecord
from store.gallery_intents import IntentStore


class Gallery:
    """Subjects and faces of one recognition service."""

    def __init__(self, control: ControlPlane, shards: ShardGroup, service_id: int):
        self.control = control
        self.shards = shards
        self.service_id = service_id
        self.intents = IntentStore(control.pool)

    async def add_faces(self, records: Sequence[FaceRecord]) -> None:
        """Store faces, creating their subjects first; acknowledged once every shard has committed."""
        if records:
            await self.control.ensure_subjects(self.service_id, [record.subject for record in records])
            await self.shards.add(records)

    async def add_subject(self, name: str) -> bool:
        """Add a subject without faces; False if it existed."""
        return await self.control.add_subject(self.service_id, name)

    async def subjects(self) -> list[str]:
        return await self.control.list_subjects(self.service_id)

    async def subjects_page(self, offset: int, limit: int, search: str = "") -> tuple[list[tuple[str, int]], int]:
        """A page of ``(subject, face count)`` in name order, and how many subjects match ``search``."""
        names, total = await self.control.subjects_page(self.service_id, offset, limit, search)
        counts = await self.shards.subject_counts(names) if names else []
        return list(zip(names, counts)), total

    async def _require_subject(self, name: str) -> None:
        if not await self.control.subject_exists(self.service_id, name):
            raise NotFound(f"subject {name!r} not found")

    async def delete_subject(self, name: str) -> int:
        """Delete a subject and its faces; returns how many faces. :class:`NotFound` if missing."""
        await self.intents.begin_delete(self.service_id, name)
        deleted = await self.shards.delete_subject(name)
        await self.intents.finish(self.service_id, name)
        return deleted

    async def delete_all(self) -> int:
        """Delete every subject and face of the service; returns how many subjects."""
        await self.intents.begin_delete_all(self.service_id)
        await self.shards.delete_all()
        return await self.intents.finish_delete_all(self.service_id)

    async def rename_subject(self, old: str, new: str) -> None:
        """Rename ``old`` to ``new``, merging into ``new`` when it exists.

        :class:`NotFound` if ``old`` is missing. Renaming a subject to its own name changes nothing.
        """
        if old == new:
            await self._require_subject(old)
            return
        await self.intents.begin_rename(self.service_id, old, new)
        await self.shards.rename_subject(old, new)
        await self.intents.finish(self.service_id, old)

    async def delete_faces(self, face_ids: Sequence[str]) -> list[tuple[str, str]]:
        """Delete faces by id (unknown ids are skipped); (face_id, subject) of those deleted."""
        return await self.shards.delete_ids(face_ids)

    async def delete_faces_of(self, subject: str) -> int:
        """Delete every face of ``subject`` (which stays, without faces); :class:`NotFound` if missing."""
        await self._require_subject(subject)
        return await self.shards.delete_subject(subject)

    async def delete_all_faces(self) -> int:
        """Delete every face of the service; its subjects stay."""
        return await self.shards.delete_all()
