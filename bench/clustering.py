"""Clustering quality of ``faces cluster`` on lfw-dev against its identity folders.

Runs the command (in this process: ``faces cluster FOLDER --largest --out FILE``, the labelled
person of an LFW photo is its largest face) on ``lfw-dev`` and ``lfw-dev-raw150``, and scores its
clusters: pairwise precision, recall and F1, and BCubed F1 (target: pairwise F1 >= 0.9). Baseline in
the same run, on the same embeddings: density-based "core faces" clustering (Immich's approach: a face
with at least ``min_faces`` neighbours within the threshold is a core face, core faces within the
threshold are linked, other faces join their most similar core face), at the same threshold and at
the threshold where it does best.

    python bench/clustering.py [--threshold 0.95]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.95, help="calibrated similarity (default 0.95)")
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
    print_table(["photos", "method", "similarity", "cosine", "clusters", "pairwise P", "pairwise R",
                 "pairwise F1", "BCubed F1"], rows)
    print(f"results: {save_results('clustering', results)}")


if __name__ == "__main__":
    main()
