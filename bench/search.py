"""1:N search at scale inside one index shard: approximate index vs exact numpy vs LanceDB flat.

Real SFace embeddings of the lfw-dev faces are the queries (second and later photos) and enrolled
targets (first photos), hidden among distractors drawn to match the statistics of real embeddings
(facecore.synthetic). For each size: single-query p50/p99 and batched queries/s of the shard's
search, recall@1 and recall@10 against exact search, index build time, RAM and disk per million
faces. Baselines measured in the same run: exact numpy search and LanceDB flat search.

    python bench/search.py [--sizes 100000,1000000,10000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import data_dir, print_table, save_results  # noqa: E402

DIM = 128
WRITE_CHUNK = 500_000
SINGLE_QUERIES = 300
WARM_UP_QUERIES = 300  # the first queries after a build touch memory the VM's host backs lazily: up to 120 ms
LANCEDB_QUERIES = {100_000: 30, 1_000_000: 10}


def lfw_embeddings() -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """(targets, target names, probes, probe names) from the lfw-dev photos."""
    from facecore.pipeline import FacePipeline

    pipeline = FacePipeline()
    targets, target_names, probes, probe_names = [], [], [], []
    for folder in sorted(p for p in (data_dir() / "lfw-dev").iterdir() if p.is_dir()):
        vectors = [v[0] for v in pipeline.embed([p.read_bytes() for p in sorted(folder.glob("*.jpg"))], limit=1)]
        targets.append(vectors[0])
        target_names.append(folder.name)
        probes.extend(vectors[1:])
        probe_names.extend([folder.name] * (len(vectors) - 1))
    return np.stack(targets), target_names, np.stack(probes), probe_names


def write_table(uri: str, name: str, gallery: np.ndarray, ids: np.ndarray) -> None:
    """Bulk-write the gallery straight into a face table (the bench's stand-in for bulk enrollment)."""
    from store.faces import FaceTable, face_schema

    table = FaceTable.open(uri, name, DIM)
    schema = face_schema(DIM)
    now = datetime.now(timezone.utc)
    for start in range(0, len(gallery), WRITE_CHUNK):
        part = slice(start, start + WRITE_CHUNK)
        count = len(ids[part])
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(gallery[part].reshape(-1)), DIM)
        table._table.add(pa.table({
            "face_id": pa.array(ids[part]), "subject": pa.array(ids[part]), "embedding": embedding,
            "model": pa.array(["sface@bench"] * count), "crop": pa.array([b""] * count, pa.binary()),
            "source": pa.nulls(count, pa.string()), "created_at": pa.array([now] * count, pa.timestamp("us", "UTC")),
        }, schema=schema))


def latencies_ms(search, queries: np.ndarray) -> np.ndarray:
    times = []
    for query in queries:
        started = time.perf_counter()
        search(query)
        times.append((time.perf_counter() - started) * 1000)
    return np.array(times)


def exact_top(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    tops = []
    for start in range(0, len(queries), 16):
        scores = queries[start:start + 16] @ gallery.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.take_along_axis(scores, part, 1).argsort(axis=1)[:, ::-1]
        tops.append(np.take_along_axis(part, order, 1))
    return np.concatenate(tops)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(size: int, targets: np.ndarray, target_names: list[str], probes: np.ndarray, rng,
            scan_threads: int = 1) -> dict:
    from faceindex.config import SearchConfig
    from faceindex.shard import IndexShard
    from facecore.synthetic import EmbeddingDistribution

    distractors = EmbeddingDistribution.fit(np.concatenate([targets, probes])).sample(size - len(targets), rng)
    gallery = np.concatenate([distractors, targets])
    del distractors
    ids = np.array([f"d{i}" for i in range(size - len(targets))] + [f"t-{n}" for n in target_names])
    work = Path(tempfile.mkdtemp(prefix="faces-bench-search-"))
    try:
        started = time.perf_counter()
        write_table(str(work), "faces", gallery, ids)
        write_seconds = time.perf_counter() - started

        truth = exact_top(gallery, probes, 10)
        numpy_ms = latencies_ms(lambda q: exact_top(gallery, q[None, :], 10), probes[:min(60, len(probes))])
        del gallery  # the shard loads its own copy from the table

        started = time.perf_counter()
        shard = IndexShard(str(work), "faces", DIM, SearchConfig(mode="ann", index_dir=str(work / "indexes"),
                                                                  scan_threads=scan_threads))
        load_seconds = time.perf_counter() - started
        stats = shard.build_index()
        found = shard.search_faces(probes, 10)
        top1 = np.mean([r[0][0] == ids[t[0]] for r, t in zip(found, truth)])
        top10 = np.mean([len({f for f, _, _ in r} & set(ids[t])) / 10 for r, t in zip(found, truth)])
        picks = probes[rng.integers(0, len(probes), SINGLE_QUERIES)]
        os.sync()  # the saved index written back to disk first, not while queries are timed
        latencies_ms(lambda q: shard.search_faces(q, 10), probes[:WARM_UP_QUERIES])  # not counted
        shard_ms = latencies_ms(lambda q: shard.search_faces(q, 10), picks)
        batch = probes[:64]
        started = time.perf_counter()
        rounds = 5
        for _ in range(rounds):
            shard.search_faces(batch, 10)
        batched_qps = rounds * len(batch) / (time.perf_counter() - started)

        table = shard._table._table
        lance_queries = probes[:LANCEDB_QUERIES.get(size, 3)]
        lance_ms = latencies_ms(lambda q: table.search(q, vector_column_name="embedding").distance_type("dot")
                                .limit(10).select(["face_id"]).to_arrow(), lance_queries)
        disk = folder_bytes(work)
        millions = size / 1e6
        return {
            "faces": size, "write_seconds": write_seconds, "load_seconds": load_seconds,
            "build_seconds": stats["last_build_seconds"], "recall_at_1": float(top1), "recall_at_10": float(top10),
            "p50_ms": float(np.percentile(shard_ms, 50)), "p99_ms": float(np.percentile(shard_ms, 99)),
            "batched_queries_per_s": batched_qps,
            "ram_mb_per_million": stats["ram_bytes"] / 2**20 / millions,
            "disk_mb_per_million": disk / 2**20 / millions,
            "numpy_p50_ms": float(np.percentile(numpy_ms, 50)), "numpy_p99_ms": float(np.percentile(numpy_ms, 99)),
            "lancedb_flat_p50_ms": float(np.percentile(lance_ms, 50)),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--scan-threads", type=int, default=1,
                        help="threads a query scans the index with (FACES_ANN_SCAN_THREADS)")
    args = parser.parse_args()
    targets, target_names, probes, _ = lfw_embeddings()
    rng = np.random.default_rng(0)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        results.append(measure(size, targets, target_names, probes, rng, args.scan_threads))
        print(f"measured {size} faces: {results[-1]}", flush=True)
    print(f"\n{len(probes)} real queries, {len(targets)} real targets among realistic distractors\n")
    print_table(["faces", "p50 ms", "p99 ms", "batched q/s", "recall@1", "recall@10", "build s",
                 "RAM MB/M", "disk MB/M", "numpy exact p50 / p99 ms", "LanceDB flat p50 ms"],
                [[r["faces"], r["p50_ms"], r["p99_ms"], r["batched_queries_per_s"], r["recall_at_1"],
                  r["recall_at_10"], r["build_seconds"], r["ram_mb_per_million"], r["disk_mb_per_million"],
                  f"{r['numpy_p50_ms']:.3g} / {r['numpy_p99_ms']:.3g}", r["lancedb_flat_p50_ms"]] for r in results])
    print(f"\nresults: {save_results(f'search-threads{args.scan_threads}', {'results': results})}")


if __name__ == "__main__":
    main()
