"""An IndexShard under steady adds and deletes with a flat face count: RSS, table versions, files, cache.

One add (one commit, as one HTTP enrollment makes) and one delete per round, on a shard that holds
``--faces`` faces throughout. Every ``--every`` rounds it records the process's RSS and private
memory (USS), the table's versions and files on disk and the bytes in LanceDB's caches: all must
level off. With ``--erase-after-s`` short the erasure pass runs during the run too.

``--threads N`` sends the rounds from N threads in turn, as a shard actor's thread pool runs its
calls (``actors.index_shard.SHARD_THREADS``). ``--trim`` reports, at each sample, how much
``malloc_trim(0)`` returns to the system (memory freed but held by glibc's arenas).
``--tracemalloc`` reports the Python allocations that grew from the first sample to the last.
``--shard-env`` runs it in the environment the shard actors start with (``faceindex.shard.SHARD_ENV``;
it re-executes itself with it, as the C allocator reads it when the process starts). The ``LanceDB
threads`` column counts the threads of LanceDB's runtime (``lancedb-tokio-w``): its blocking file
operations run on threads it keeps while work keeps reaching them.

    python bench/shard_churn.py [--rounds 20000] [--faces 10000] [--erase-after-s 300] [--threads 4]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, save_results  # noqa: E402

DIM = 128


def lance_threads() -> int:
    """Threads of this process that LanceDB's runtime started (named ``lancedb-tokio-w...``)."""
    return sum(1 for task in Path("/proc/self/task").iterdir()
               if (task / "comm").read_text().startswith("lancedb-tokio"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=2_000)
    parser.add_argument("--erase-after-s", type=float, default=300.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trim", action="store_true", help="measure what malloc_trim(0) gives back at each sample")
    parser.add_argument("--tracemalloc", action="store_true", help="show the Python allocations that grew")
    parser.add_argument("--shard-env", action="store_true",
                        help="run with the environment the shard actors start with (faceindex.shard.SHARD_ENV)")
    args = parser.parse_args()
    if args.shard_env:
        from faceindex.shard import SHARD_ENV

        if any(os.environ.get(name) != value for name, value in SHARD_ENV.items()):
            os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **SHARD_ENV})

    from faceindex.shard import IndexShard
    from faceindex.upkeep import TableUpkeep
    from store.faces import FaceRecord, lance_session

    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()  # the size of a 112x112 JPEG crop
    now = datetime.now(timezone.utc)

    def faces(ids: list[str]) -> list[FaceRecord]:
        vectors = rng.standard_normal((len(ids), DIM)).astype(np.float32)
        return [FaceRecord(face_id, f"person {i % 500}", vector, "bench", crop, None, now)
                for i, (face_id, vector) in enumerate(zip(ids, vectors))]

    folder = Path(tempfile.mkdtemp(prefix="shard-churn-"))
    shard = IndexShard(str(folder), "churn", DIM, upkeep=TableUpkeep(erase_after_s=args.erase_after_s))
    shard.add(faces([f"base-{i}" for i in range(args.faces)]))
    process = psutil.Process()
    libc = ctypes.CDLL("libc.so.6")
    pool = ThreadPoolExecutor(args.threads)
    if args.tracemalloc:
        tracemalloc.start(8)
    first_snapshot = None
    rows = []
    started_cpu = time.process_time()

    def round_(number: int) -> None:
        shard.add(faces([f"face-{number}"]))
        shard.delete_ids([f"face-{number - 1}" if number > 1 else "base-0"])

    for start in range(1, args.rounds + 1, args.every):
        numbers = range(start, min(start + args.every, args.rounds + 1))
        for number in numbers:  # in order (each round deletes the previous face), each on the next thread
            pool.submit(round_, number).result()
        memory = process.memory_full_info()
        trimmed = None
        if args.trim:
            libc.malloc_trim(0)
            trimmed = round((memory.rss - process.memory_info().rss) / 2**20, 1)
        table_dir = folder / "churn.lance"
        rows.append([numbers[-1], round(memory.rss / 2**20), round(memory.uss / 2**20), trimmed,
                     shard._table.version_count(), sum(1 for f in table_dir.rglob("*") if f.is_file()),
                     round(lance_session().size_bytes / 2**20, 1), shard.count(), process.num_threads(),
                     lance_threads(),
                     round(numbers[-1] / (time.process_time() - started_cpu))])
        if args.tracemalloc:
            first_snapshot = first_snapshot or tracemalloc.take_snapshot()
    print_table(["rounds", "RSS MiB", "USS MiB", "malloc_trim MiB", "versions", "files", "LanceDB cache MiB",
                 "faces", "threads", "LanceDB threads", "rounds/CPU s"], rows)
    if args.tracemalloc:
        grown = tracemalloc.take_snapshot().compare_to(first_snapshot, "traceback")
        print("Python allocations grown since the first sample:")
        for stat in grown[:8]:
            print(f"  {stat.size_diff / 1024:+.1f} KiB in {stat.count_diff:+d} blocks at {stat.traceback[-1]}")
    path = save_results("shard_churn", {"args": vars(args), "rows": rows})
    print(f"results: {path}")
    pool.shutdown()
    shard.drop()


if __name__ == "__main__":
    main()
