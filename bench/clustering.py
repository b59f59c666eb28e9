"""Clustering quality of ``faces cluster`` on lfw-dev against its identity folders.

Runs the command (in this process: ``faces cluster FOLDER --largest --out FILE``, the labelled
person of an LFW photo is its largest face) on ``lfw-dev`` and ``lfw-dev-raw150``, and scores its
clusters: pairwise precision, recall and F1, and BCubed F1 (target: pairwise F1 >= 0.9). Baseline in
the same run, on the same embeddings: density-based "core faces" clustering (Immich's approach: a face
with at least ``min_faces`` neighbours within the threshold is a core face, core faces within the
threshold are linked, other faces join their most similar core face), at the same threshold and at
the threshold where it does best.

Online assignment (``--online-sightings N``): a service's history of N sightings in identities of
``--per-identity`` sightings each (synthetic embeddings drawn like real ones,
:mod:`facecore.synthetic`), then the real lfw-dev faces arrive one by one: milliseconds per
sighting to join or seed an identity (:class:`facecore.identities.OnlineIdentities`; target <= 5 ms
with 1M sightings). Full re-clustering (``--recluster-sightings N``): time and peak memory of
``OnlineIdentities.recluster`` over N sightings (exact average linkage, O(N^2) memory).

    python bench/clustering.py [--threshold 0.95] [--online-sightings 1000000] [--recluster-sightings 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Stopwatch, data_dir, print_table, save_results  # noqa: E402
from facecore.cluster_scores import cluster_scores  # noqa: E402
from facecore.similarity import cosine_from_similarity, similarity_from_cosine  # noqa: E402
from faces_cli.main import main as faces  # noqa: E402

CORE_MIN_FACES = 2


def run_faces_cluster(folder: Path, threshold: float) -> tuple[dict, float]:
    """The JSON clusters ``faces cluster`` writes with ``--out``, and its run time."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "clusters.json"
        with Stopwatch() as watch, open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            code = faces(["cluster", str(folder), "--largest", "--threshold", str(threshold), "--out", str(out)])
        if code != 0:
            raise SystemExit(f"faces cluster {folder} exited with {code}")
        return json.loads(out.read_text()), watch.seconds


def labelled(result: dict) -> tuple[list[int], list[str]]:
    """Cluster number and true identity (the photo's folder) of every clustered face."""
    clusters, identities = [], []
    for number, members in enumerate(result["clusters"]):
        for face in members:
            clusters.append(number)
            identities.append(Path(face["image"]).parent.name)
    return clusters, identities


def core_faces(vectors: np.ndarray, cosine: float, min_faces: int = CORE_MIN_FACES) -> np.ndarray:
    """The density-based baseline's labels."""
    similar = vectors @ vectors.T >= cosine
    core = similar.sum(axis=1) >= min_faces
    parent = np.arange(len(vectors))

    def root(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for first, second in zip(*np.nonzero(np.triu(similar & core[:, None] & core[None, :], 1))):
        parent[root(first)] = root(second)
    labels = np.array([root(item) for item in range(len(vectors))])
    scores = vectors @ vectors.T
    for item in np.flatnonzero(~core):
        candidates = np.where(core & similar[item], scores[item], -np.inf)
        if np.isfinite(candidates.max()):
            labels[item] = labels[int(candidates.argmax())]
    return labels


def embeddings_of(result: dict) -> np.ndarray:
    """The clustered faces' embeddings, in the order of :func:`labelled` (read again with the pipeline)."""
    from facecore.pipeline import FacePipeline
    from faces_settings import get_settings

    pipeline = FacePipeline(get_settings().pipeline_config())
    images = [face["image"] for members in result["clusters"] for face in members]
    return np.concatenate([pipeline.embed([Path(image).read_bytes()], limit=1)[0] for image in images])


def synthetic_history(real: np.ndarray, sightings: int, per_identity: int) -> tuple[np.ndarray, np.ndarray]:
    """``sightings`` embeddings drawn like ``real`` ones, in identities of ``per_identity`` sightings."""
    from facecore.synthetic import EmbeddingDistribution

    rng = np.random.default_rng(0)
    identities = max(1, sightings // per_identity)
    centres = EmbeddingDistribution.fit(real).sample(identities, rng)
    labels = np.arange(sightings) % identities
    vectors = centres[labels] + 0.05 * rng.standard_normal((sightings, real.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, labels + 1


def online_assignment(real: np.ndarray, qualities: np.ndarray, threshold: float, sightings: int,
                      per_identity: int) -> dict:
    from facecore.identities import OnlineIdentities

    online = OnlineIdentities(real.shape[1], cosine_from_similarity(threshold), min_quality=0.5)
    with Stopwatch() as build:
        online.rebuild(*synthetic_history(real, sightings, per_identity))
    identities = len(online)
    times = []
    for vector, quality in zip(real, qualities):
        started = time.perf_counter()
        online.assign(vector, quality)
        times.append((time.perf_counter() - started) * 1000)
    times = np.array(times)
    return {"sightings": sightings, "identities": identities, "arrivals": len(times), "build_seconds": build.seconds,
            "ms_p50": float(np.percentile(times, 50)), "ms_p99": float(np.percentile(times, 99)),
            "ms_mean": float(times.mean())}


def full_recluster(real: np.ndarray, threshold: float, sightings: int, per_identity: int) -> dict:
    import tracemalloc

    from facecore.identities import UNASSIGNED, OnlineIdentities

    vectors, labels = synthetic_history(real, sightings, per_identity)
    online = OnlineIdentities(real.shape[1], cosine_from_similarity(threshold), min_quality=0.5)
    online.rebuild(vectors, labels)
    previous = np.where(np.arange(sightings) % 7 == 0, UNASSIGNED, labels)  # some not yet assigned
    tracemalloc.start()
    with Stopwatch() as watch:
        result = online.recluster(vectors, np.ones(sightings), previous)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"sightings": sightings, "seconds": watch.seconds, "peak_mib": peak / 2**20,
            "identities": len(online), "ids_kept": len(set(result.tolist()) & set(labels.tolist()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.95, help="calibrated similarity (default 0.95)")
    parser.add_argument("--online-sightings", type=int, default=0, help="history size for the online assignment "
                                                                        "timing (0: skip)")
    parser.add_argument("--recluster-sightings", type=int, default=0, help="sightings re-clustered (0: skip)")
    parser.add_argument("--per-identity", type=int, default=10, help="sightings per identity in the history")
    args = parser.parse_args()
    rows, results = [], {"started": datetime.now(timezone.utc).isoformat(), "threshold": args.threshold, "runs": []}
    for folder in ("lfw-dev", "lfw-dev-raw150"):
        result, seconds = run_faces_cluster(data_dir() / folder, args.threshold)
        clusters, identities = labelled(result)
        runs = [("faces cluster (average linkage)", args.threshold, clusters)]
        vectors = embeddings_of(result)
        for cosine in (cosine_from_similarity(args.threshold), 0.44, 0.48):
            runs.append((f"core faces, min {CORE_MIN_FACES}", float(similarity_from_cosine(cosine)),
                         core_faces(vectors, cosine).tolist()))
        for method, threshold, labels in runs:
            scores = cluster_scores(labels, identities)
            rows.append([folder, method, round(threshold, 4), round(cosine_from_similarity(threshold), 3),
                         len(set(labels)), scores.pairwise_precision, scores.pairwise_recall, scores.pairwise_f1,
                         scores.bcubed_f1])
            results["runs"].append({"folder": folder, "method": method, "similarity": threshold,
                                    "clusters": len(set(labels)), "faces": len(labels),
                                    "identities": len(set(identities)), **vars(scores),
                                    **({"seconds": seconds} if method.startswith("faces") else {})})
        if folder == "lfw-dev":
            real, qualities = vectors, np.array([face["quality"] for members in result["clusters"]
                                                 for face in members])
    print_table(["photos", "method", "similarity", "cosine", "clusters", "pairwise P", "pairwise R",
                 "pairwise F1", "BCubed F1"], rows)
    if args.online_sightings:
        online = online_assignment(real, qualities, args.threshold, args.online_sightings, args.per_identity)
        results["online"] = online
        print_table(["history sightings", "identities", "arrivals", "ms p50", "ms p99", "ms mean"],
                    [[online["sightings"], online["identities"], online["arrivals"], online["ms_p50"],
                      online["ms_p99"], online["ms_mean"]]])
    if args.recluster_sightings:
        again = full_recluster(real, args.threshold, args.recluster_sightings, args.per_identity)
        results["recluster"] = again
        print_table(["sightings re-clustered", "seconds", "peak MiB", "identities", "ids kept"],
                    [[again["sightings"], again["seconds"], again["peak_mib"], again["identities"],
                      again["ids_kept"]]])
    print(f"results: {save_results('clustering', results)}")


if __name__ == "__main__":
    main()
