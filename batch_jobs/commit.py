"""Batched commits of enrolled faces through the service's gallery (subject rows first, then faces).

Within a commit the faces other than an image's first
are stored before the first faces, so a stored first face means its whole image is stored: the read
stage skips an input on exactly that evidence (see :mod:`batch_jobs.fetch`).
"""

from __future__ import annotations

from gallery.service_gallery import Gallery
from store.faces import FaceRecord


class FaceCommitter:
    """Buffers the faces of enrolled images and stores them in large batches."""

    def __init__(self, gallery: Gallery):
        self.gallery = gallery
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
        await self.gallery.add_faces(others)
        await self.gallery.add_faces(first)
        return len(first) + len(others)
