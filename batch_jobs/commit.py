"""Batched commits of enrolled faces: subjects to PostgreSQL first, then faces to the index shards.

A subject row always exists before its faces. Within a commit the faces other than an image's first
are stored before the first faces, so a stored first face means its whole image is stored: the read
stage skips an input on exactly that evidence (see :mod:`batch_jobs.fetch`).
"""

from __future__ import annotations

from actors.shard_group import ShardGroup
from store.control import ControlPlane
from store.faces import FaceRecord


class FaceCommitter:
    """Buffers the faces of enrolled images and stores them in large batches."""

    def __init__(self, control: ControlPlane, shards: ShardGroup, service_id: int):
        self.control = control
        self.shards = shards
        self.service_id = service_id
        self._first: list[FaceRecord] = []
        self._others: list[FaceRecord] = []

    @property
    def pending(self) -> int:
        """Faces waiting for the next commit."""
        return len(self._first) + len(self._others)

    def add(self, faces: list[FaceRecord]) -> None:
        """Queue the faces of one image, its first (largest) face first."""
        if faces:
            self._first.append(faces[0])
            self._others.extend(faces[1:])

    async def commit(self) -> int:
        """Store the queued faces; returns how many. Acknowledged by every shard's LanceDB commit."""
        first, others = self._first, self._others
        self._first, self._others = [], []
        if not first:
            return 0
        await self.control.ensure_subjects(self.service_id, [face.subject for face in first])
        if others:
            await self.shards.add(others)
        await self.shards.add(first)
        return len(first) + len(others)
