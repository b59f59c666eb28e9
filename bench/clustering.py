"""Clustering quality of ``faces cluster`` on lfw-dev against its identity folders.

Runs the command (in this process: ``faces cluster FOLDER --largest --out FILE``, the labelled
person of an LFW photo is its largest face) on ``lfw-dev`` and ``lfw-dev-raw150``, and scores its
clusters: pairwise precision, recall and F1, and BCubed F1 (target: pairwise F1 >= 0.9). Baseline in
the same run, on the same embeddings: density-based "core faces" clustering (Immich's approach: a face
with at least ``min_faces`` neighbours within the threshold is a core face, core faces within the
threshold are linked, other faces join their most similar core face), at the same threshold and at
the threshold where it does best.

Synthetic histories (for the two sizes below): identities of ``--per-identity`` sightings; each
identity's centre is drawn from a Gaussian fitted to the real lfw-dev embeddings
(:mod:`facecore.synthetic`) and each sighting is that centre plus isotropic noise scaled so that two
sightings of one identity average the cosine that two lfw-dev photos of one person do (~0.66).

Online assignment (``--online-sightings N``): a service's history of N such sightings, then the real
lfw-dev faces arrive one by one: milliseconds per sighting to join or seed an identity, p50 and p99,
both in this process (:class:`actors.indexed_identities.IndexedIdentities`) and through the
service's identity keeper actor on a local Ray cluster (target <= 5 ms with 1M sightings).

Full re-clustering (``--recluster-sightings N``): time of the nearest-neighbour graph (exact search
up to 200,000 sightings, through an HNSW graph above: its build's time apart), of the linkage and of
the adoption as identities, the peak of extra resident memory (``VmHWM``), the clusters' pairwise
and BCubed F1 against the synthetic identities, and the recall of the neighbour lists against exact
search for 1,000 sampled sightings (all neighbours, and those at or above the threshold: the edges
that can join clusters).

    python bench/clustering.py [--threshold 0.95] [--online-sightings 1000000] [--recluster-sightings 1000000]
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
RECALL_SAMPLE = 1000  # sightings whose neighbour lists are checked against exact search


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


def same_person_cosine(real: np.ndarray, people: list[str]) -> float:
    """The mean cosine between two photos of one person among the ``real`` faces."""
    people = np.asarray(people)
    pairs = [np.triu(real[people == person] @ real[people == person].T, 1).sum() for person in set(people.tolist())]
    counts = np.unique(people, return_counts=True)[1]
    return float(sum(pairs) / sum(n * (n - 1) / 2 for n in counts))


def synthetic_history(real: np.ndarray, same_cosine: float, sightings: int,
                      per_identity: int) -> tuple[np.ndarray, np.ndarray]:
    """``sightings`` embeddings in identities of ``per_identity`` sightings (ids from 1): each
    identity's centre is drawn from a Gaussian fitted to the ``real`` faces (:mod:`facecore.synthetic`),
    and each sighting is its centre plus isotropic noise scaled so that two sightings of one identity
    average ``same_cosine``, as two real photos of one person do."""
    from facecore.synthetic import EmbeddingDistribution, noisy_sightings

    rng = np.random.default_rng(0)
    identities = max(1, sightings // per_identity)
    centres = EmbeddingDistribution.fit(real).sample(identities, rng)
    labels = np.arange(sightings) % identities
    vectors = noisy_sightings(centres, labels, same_cosine, rng)
    return vectors, labels + 1


def percentiles(milliseconds: list[float]) -> dict:
    times = np.array(milliseconds)
    return {"ms_p50": float(np.percentile(times, 50)), "ms_p99": float(np.percentile(times, 99)),
            "ms_mean": float(times.mean()), "arrivals": len(times)}


def online_assignment(real: np.ndarray, qualities: np.ndarray, history: tuple[np.ndarray, np.ndarray],
                      threshold: float) -> dict:
    """Milliseconds per arriving sighting, in this process (the keeper's own identities class)."""
    from actors.indexed_identities import IndexedIdentities

    online = IndexedIdentities(real.shape[1], cosine_from_similarity(threshold), min_quality=0.5)
    with Stopwatch() as build:
        online.rebuild(*history)
        online.settle()
    identities, times = len(online), []
    for vector, quality in zip(real, qualities):
        started = time.perf_counter()
        online.assign(vector, quality)
        times.append((time.perf_counter() - started) * 1000)
    return {"where": "library", "sightings": len(history[0]), "identities": identities, "indexed": online.indexed,
            "load_seconds": build.seconds, **percentiles(times)}


def keeper_assignment(real: np.ndarray, qualities: np.ndarray, history: tuple[np.ndarray, np.ndarray],
                      threshold: float) -> dict:
    """Milliseconds per arriving sighting through a service's identity keeper actor on a local Ray
    cluster (the call ``actors.unknown_faces`` makes: one sighting per call), after 20 warm-up calls."""
    import ray

    from actors.identity_keeper import identity_keeper

    vectors, labels = history
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cosine = cosine_from_similarity(threshold)
        keeper = identity_keeper(10**9 + os.getpid(), cosine, 0.5)
        with Stopwatch() as load:
            ray.get(keeper.load.remote(vectors, labels, int(labels.max()) + 1, []))
            indexed = ray.get(keeper.settle.remote())
        for vector in vectors[:20]:
            ray.get(keeper.assign.remote(vector[None], [1.0], cosine))
        times = []
        for vector, quality in zip(real, qualities):
            started = time.perf_counter()
            ray.get(keeper.assign.remote(vector[None], [float(quality)], cosine))
            times.append((time.perf_counter() - started) * 1000)
        ray.kill(keeper, no_restart=True)
    finally:
        ray.shutdown()
    return {"where": "identity keeper", "sightings": len(vectors), "identities": len(set(labels.tolist())),
            "indexed": indexed, "load_seconds": load.seconds, **percentiles(times)}


def resident_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def full_recluster(history: tuple[np.ndarray, np.ndarray], threshold: float) -> dict:
    """Time, peak memory and quality of a full re-clustering of the history, in this process (graph
    search on every core): the nearest-neighbour graph (the search chosen by size, and its index's
    build, if any), the linkage, and the adoption of its clusters as identities (one sighting in 7
    not yet assigned); then the neighbour lists' recall against exact search on a sample of sightings."""
    from facecore.faiss_runtime import faiss
    from facecore.graph_linkage import graph_average_linkage
    from facecore.identities import UNASSIGNED, OnlineIdentities
    from facecore.neighbour_graph import graph_search, neighbour_edges, neighbour_recall

    vectors, labels = history
    cosine = cosine_from_similarity(threshold)
    online = OnlineIdentities(vectors.shape[1], cosine, min_quality=0.5)
    online.rebuild(vectors, labels)
    previous = np.where(np.arange(len(vectors)) % 7 == 0, UNASSIGNED, labels)
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
    before = resident_mib("VmRSS")
    with Stopwatch() as index:
        search = graph_search(vectors)
    with Stopwatch() as graph:
        edges = neighbour_edges(vectors, search=search)
    print(f"graph of {len(vectors)} sightings: {type(search).__name__}, index {index.seconds:.1f} s, "
          f"search {graph.seconds:.1f} s", flush=True)
    with Stopwatch() as linkage:
        clusters = graph_average_linkage(vectors, *edges, cosine)
    print(f"linkage {linkage.seconds:.1f} s", flush=True)
    with Stopwatch() as adoption:
        result = online.adopt(vectors, clusters, np.ones(len(vectors)), previous)
    peak = resident_mib("VmHWM") - before
    scores = cluster_scores(clusters.tolist(), labels.tolist())
    sample = np.random.default_rng(1).choice(len(vectors), min(len(vectors), RECALL_SAMPLE), replace=False)
    return {"sightings": len(vectors), "search": type(search).__name__, "threads": faiss.omp_get_max_threads(),
            "edges": len(edges[0]), "index_seconds": index.seconds, "graph_seconds": graph.seconds,
            "linkage_seconds": linkage.seconds, "adopt_seconds": adoption.seconds,
            "neighbour_recall": neighbour_recall(vectors, edges, sample),
            "recall_above_threshold": neighbour_recall(vectors, edges, sample, min_cosine=cosine),
            "peak_extra_mib": peak, "history_mib": vectors.nbytes / 2**20,
            "identities": len(online), "ids_kept": len(set(result.tolist()) & set(labels.tolist())),
            "pairwise_f1": scores.pairwise_f1, "bcubed_f1": scores.bcubed_f1}


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
            real, people = vectors, identities
            qualities = np.array([face["quality"] for members in result["clusters"] for face in members])
    print_table(["photos", "method", "similarity", "cosine", "clusters", "pairwise P", "pairwise R",
                 "pairwise F1", "BCubed F1"], rows)
    same_cosine = same_person_cosine(real, people)
    results["same_person_cosine"] = same_cosine
    if args.online_sightings:
        with Stopwatch() as made:
            history = synthetic_history(real, same_cosine, args.online_sightings, args.per_identity)
        results["history_seconds"] = made.seconds
        print(f"history of {args.online_sightings} sightings made in {made.seconds:.1f} s")
        results["online"] = [online_assignment(real, qualities, history, args.threshold),
                             keeper_assignment(real, qualities, history, args.threshold)]
        del history  # the re-clustering's peak memory counts its own history only
        print_table(["assigned in", "history sightings", "identities", "indexed", "arrivals", "ms p50", "ms p99",
                     "ms mean", "load + index s"],
                    [[run["where"], run["sightings"], run["identities"], run["indexed"], run["arrivals"], run["ms_p50"],
                      run["ms_p99"], run["ms_mean"], run["load_seconds"]] for run in results["online"]])
    if args.recluster_sightings:
        again = full_recluster(synthetic_history(real, same_cosine, args.recluster_sightings, args.per_identity),
                               args.threshold)
        results["recluster"] = again
        print_table(["sightings re-clustered", "search", "threads", "edges", "index s",
                     "graph s", "linkage s", "adopt s", "neighbour recall", "recall above threshold",
                     "peak extra MiB", "history MiB", "identities", "ids kept", "pairwise F1", "BCubed F1"],
                    [[again[key] for key in ("sightings", "search", "threads", "edges", "index_seconds", "graph_seconds", "linkage_seconds",
                                             "adopt_seconds", "neighbour_recall", "recall_above_threshold",
                                             "peak_extra_mib", "history_mib", "identities", "ids_kept",
                                             "pairwise_f1", "bcubed_f1")]])
    print(f"results: {save_results('clustering', results)}")


if __name__ == "__main__":
    main()
