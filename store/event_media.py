"""JPEG files of video events (best-shot crops and full frames) under one root directory.

Files live at ``<root>/<stream id>/<yyyymmdd>/<name>.jpg``; the event rows store the path relative
to the root. On a multi-node cluster the root must be shared storage (every ingress replica reads
what any worker wrote).
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path


class EventMedia:
    """Write, read and delete event images under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def save(self, stream_id: int, name: str, data: bytes) -> str:
        """Write ``data`` atomically (temp file, then rename) and return its relative path."""
        day = datetime.now(timezone.utc).strftime("%Y%m%d")
        relative = Path(str(int(stream_id))) / day / f"{name}.jpg"
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(data)
        temporary.replace(target)
        return relative.as_posix()

    def read(self, relative: str) -> bytes | None:
        """The file's bytes, or None when it is missing (or the path leaves the root)."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            return None
        return path.read_bytes()

    def delete_stream(self, stream_id: int) -> None:
        """Remove every file of a stream."""
        shutil.rmtree(self.root / str(int(stream_id)), ignore_errors=True)

    def delete_files(self, relatives: list[str]) -> None:
        """Remove these files (paths relative to the root; missing ones and paths leaving it are skipped),
        and the day folders they leave empty."""
        root = self.root.resolve()
        for relative in relatives:
            path = (self.root / relative).resolve()
            if path.is_relative_to(root):
                path.unlink(missing_ok=True)
                try:
                    path.parent.rmdir()
                except OSError:  # not empty (or already gone)
                    pass

    def stream_ids(self) -> list[int]:
        """Ids of the streams that have a folder here."""
        if not self.root.is_dir():
            return []
        return [int(entry.name) for entry in self.root.iterdir() if entry.is_dir() and entry.name.isdigit()]
