"""An IndexShard under steady adds and deletes with a flat face count: RSS, table versions, files, cache.

One add (one commit, as one HTTP enrollment makes) and one delete per round, on a shard that holds
``--faces`` faces throughout. Every ``--every`` rounds it records the process's RSS, the table's
versions and files on disk and the bytes in LanceDB's caches: all must level off. With
``--erase-after-s`` short the erasure pass runs during the run too.

    python bench/shard_churn.py [--rounds 20000] [--faces 10000] [--erase-after-s 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, save_results  # noqa: E402

DIM = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=2_000)
    parser.add_argument("--erase-after-s", type=float, default=300.0)
    args = parser.parse_args()

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
    rows = []
    started = time.perf_counter()
    for round_ in range(1, args.rounds + 1):
        shard.add(faces([f"face-{round_}"]))
        shard.delete_ids([f"face-{round_ - 1}" if round_ > 1 else "base-0"])
        if round_ % args.every == 0:
            table_dir = folder / "churn.lance"
            rows.append([round_, round(process.memory_info().rss / 2**20), shard._table.version_count(),
                         sum(1 for f in table_dir.rglob("*") if f.is_file()),
                         round(lance_session().size_bytes / 2**20, 1), shard.count(),
                         round(round_ / (time.perf_counter() - started))])
    print_table(["rounds", "RSS MiB", "versions", "files", "LanceDB cache MiB", "faces", "rounds/s"], rows)
    path = save_results("shard_churn", {"args": vars(args), "rows": rows})
    print(f"results: {path}")
    shard.drop()


if __name__ == "__main__":
    main()
