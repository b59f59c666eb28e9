"""JPEG files of video events (best-shot crops and full frames) under one root.

Files live at ``<root>/<stream id>/<yyyymmdd>/<name>.jpg``; the event rows store the path relative
to the root. The root is a local folder or an object-store prefix (:mod:`store.object_storage`): on a
multi-node cluster it must be one that every node reaches (every ingress replica reads what any
worker wrote).
"""

from __future__ import annotations

import posixpath
from datetime import datetime, timezone
from pathlib import Path

from store.object_storage import (child_names, delete_empty_folder, delete_tree, delete_uri, join_uri, read_uri,
                                  write_uri)


def _inside(relative: str) -> str | None:
    """The normalised relative path, or None when it would leave the root."""
    normal = posixpath.normpath(relative)
    return None if normal.startswith(("/", "..")) or "\\" in normal else normal


class EventMedia:
    """Write, read and delete event images under ``root`` (a local path or a URI)."""

    def __init__(self, root: str | Path):
        self.root = str(root)

    def save(self, stream_id: int, name: str, data: bytes) -> str:
        """Write ``data`` atomically and return its relative path."""
        day = datetime.now(timezone.utc).strftime("%Y%m%d")
        relative = f"{int(stream_id)}/{day}/{name}.jpg"
        write_uri(join_uri(self.root, relative), data)
        return relative

    def read(self, relative: str) -> bytes | None:
        """The file's bytes, or None when it is missing (or the path leaves the root)."""
        normal = _inside(relative)
        return None if normal is None else read_uri(join_uri(self.root, normal))

    def delete_stream(self, stream_id: int) -> None:
        """Remove every file of a stream."""
        delete_tree(join_uri(self.root, str(int(stream_id))))

    def delete_files(self, relatives: list[str]) -> None:
        """Remove these files (paths relative to the root; missing ones and paths leaving it are skipped),
        and the day folders they leave empty."""
        for relative in relatives:
            normal = _inside(relative)
            if normal is not None:
                delete_uri(join_uri(self.root, normal))
                delete_empty_folder(join_uri(self.root, posixpath.dirname(normal)))

    def stream_ids(self) -> list[int]:
        """Ids of the streams that have a folder here."""
        return [int(name) for name in child_names(self.root) if name.isdigit()]
