"""An index shard's process runs with the allocator settings the platform gives it."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone

import numpy as np
import ray

from actors.index_shard import ShardGroup
from faceindex.config import SearchConfig
from faceindex.shard import SHARD_ENV
from store.faces import FaceRecord


def test_an_index_shard_process_allocates_from_two_malloc_arenas(server, tmp_path):
    """LanceDB's runtime threads each took a glibc arena of their own (15 after one add, delete and
    erasure in a process started without the setting): a shard's process starts with 2."""
    group = ShardGroup(999_301, 1, str(tmp_path / "faces"), 8, SearchConfig(mode="exact"))
    shard = group.actors[0]
    try:
        now = datetime.now(timezone.utc)
        vectors = np.eye(8, dtype=np.float32)
        asyncio.run(group.add([FaceRecord(f"f{i}", "someone", vectors[i], "sface@test", b"", None, now)
                               for i in range(8)]))
        asyncio.run(group.delete_ids(["f0", "f1"]))
        asyncio.run(group.erase_deleted())  # a rewrite of the table and a clean-up of its files

        def arenas(_shard) -> int:
            """glibc's malloc arenas in this process (one ``<heap>`` each in ``malloc_info``)."""
            import ctypes
            import tempfile

            libc = ctypes.CDLL("libc.so.6")
            libc.fopen.restype = ctypes.c_void_p
            libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
            libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
            libc.fclose.argtypes = [ctypes.c_void_p]
            with tempfile.NamedTemporaryFile(suffix=".xml") as report:
                stream = libc.fopen(report.name.encode(), b"w")
                libc.malloc_info(0, stream)
                libc.fclose(stream)
                return open(report.name).read().count("<heap nr=")

        pid = ray.get(shard.__ray_call__.remote(lambda _shard: os.getpid()), timeout=60)
        with open(f"/proc/{pid}/environ", "rb") as file:  # what the process started with, as glibc read it
            environment = dict(item.split(b"=", 1) for item in file.read().split(b"\0") if b"=" in item)
        assert SHARD_ENV == {"MALLOC_ARENA_MAX": "2"}
        assert environment[b"MALLOC_ARENA_MAX"] == b"2"
        assert ray.get(shard.__ray_call__.remote(arenas), timeout=60) <= 2
        assert asyncio.run(group.count()) == 6
    finally:
        asyncio.run(group.drop())
