"""Clustering that scales to a service's whole history: average linkage over a nearest-neighbour graph
(exact where the graph is complete, as good on real faces where it is not, nor where the graph is
searched through HNSW), and the identity keeper's best match through an index over the
identities' means (the same answers as the exact scan)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import actors.indexed_identities as indexed_identities
from actors.indexed_identities import IndexedIdentities
from facecore.cluster_scores import cluster_scores
from facecore.face_clusters import agglomerate
from facecore.graph_linkage import cluster_faces, graph_average_linkage
from facecore.hnsw_search import HnswSearch
from facecore.identities import UNASSIGNED, OnlineIdentities
from facecore.neighbour_graph import ExactSearch, graph_search, neighbour_edges, neighbour_recall
from facecore.similarity import DEFAULT_RECOGNITION_THRESHOLD, cosine_from_similarity
from facecore.synthetic import EmbeddingDistribution, noisy_sightings

THRESHOLD = cosine_from_similarity(DEFAULT_RECOGNITION_THRESHOLD)
RECALL_FLOOR = 0.93           # share of the exact 32 nearest that the graph searched through HNSW holds
SAME_IDENTITY_FLOOR = 0.995   # share of the other sightings of a face's identity it holds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linkage_over_the_complete_graph_is_exactly_average_linkage(seed):
    rng = np.random.default_rng(seed)
    vectors = np.repeat(rng.standard_normal((20, 16)), 10, axis=0) + 0.9 * rng.standard_normal((200, 16)) + 2.0
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    assert (vectors @ vectors.T).min() > 0  # every pair is an edge: no pair counts as the missing 0
    threshold = float(np.quantile(vectors @ vectors.T, 0.9))
    edges = neighbour_edges(vectors, neighbours=len(vectors), search=ExactSearch(len(vectors), chunk=37))
    assert len(edges[0]) == len(vectors) * (len(vectors) - 1)
    labels = graph_average_linkage(vectors, *edges, threshold)
    exact = agglomerate(vectors, threshold)
    assert (labels == exact).all() and 10 < len(set(labels.tolist())) < 100


def test_a_sparse_graph_clusters_real_faces_as_the_exact_linkage_does(lfw_faces):
    vectors, people, _ = lfw_faces
    photos_per_person = np.unique(people, return_counts=True)[1]
    exact = cluster_scores(agglomerate(vectors, THRESHOLD).tolist(), people.tolist())
    # two neighbours per face, fewer than the photos of the people with most: the graph is sparse
    edges = neighbour_edges(vectors, neighbours=2, search=ExactSearch(len(vectors), chunk=100))
    assert photos_per_person.max() > 3 and len(edges[0]) <= 2 * len(vectors)
    sparse = cluster_scores(graph_average_linkage(vectors, *edges, THRESHOLD).tolist(), people.tolist())
    assert sparse.pairwise_precision == 1.0 and sparse.pairwise_f1 >= 0.9
    assert sparse.pairwise_f1 >= exact.pairwise_f1 - 0.02 and sparse.bcubed_f1 >= 0.95
    default = cluster_scores(cluster_faces(vectors, THRESHOLD).tolist(), people.tolist())
    assert default == exact


def test_a_person_seen_far_more_often_than_the_graph_has_neighbours_stays_one_cluster(lfw_faces):
    """Sightings of one regular visitor (one real face, varied as real photos of a person vary) and of
    strangers: 2 neighbours per face, yet the visitor's 300 sightings end as one cluster."""
    vectors, _, _ = lfw_faces
    rng = np.random.default_rng(3)
    spread = np.sqrt((1 / 0.66 - 1) / vectors.shape[1])  # two sightings average cosine ~0.66
    visitor = vectors[0] + spread * rng.standard_normal((300, vectors.shape[1]))
    faces = np.concatenate([visitor / np.linalg.norm(visitor, axis=1, keepdims=True), vectors[10:]]).astype(np.float32)
    labels = graph_average_linkage(faces, *neighbour_edges(faces, neighbours=2), THRESHOLD)
    assert set(labels[:300].tolist()) == {0} and 0 not in labels[300:]


def test_real_faces_cluster_the_same_when_the_graph_is_searched_through_hnsw(lfw_faces):
    vectors, people, _ = lfw_faces
    search = graph_search(vectors, approximate=True)
    assert isinstance(search, HnswSearch)
    approximate = neighbour_edges(vectors, search=search)
    exact = neighbour_edges(vectors, search=ExactSearch(len(vectors)))
    assert neighbour_recall(vectors, approximate, np.arange(len(vectors))) >= RECALL_FLOOR
    assert (cluster_scores(graph_average_linkage(vectors, *approximate, THRESHOLD).tolist(), people.tolist())
            == cluster_scores(graph_average_linkage(vectors, *exact, THRESHOLD).tolist(), people.tolist()))


def test_neighbour_lists_searched_through_hnsw_hold_nearly_all_true_neighbours(lfw_faces):
    """5,000 sightings of 500 identities drawn like real faces (as bench/clustering.py's histories),
    the graph searched as a large history's is (in several units, the index pickled as for Ray
    workers): most of each sighting's exact 32 nearest are found, and nearly every other sighting of
    its identity (the edges that join clusters), so the clusters are the identities."""
    vectors, _, _ = lfw_faces
    rng = np.random.default_rng(5)
    identities = np.arange(5000) % 500
    faces = noisy_sightings(EmbeddingDistribution.fit(vectors).sample(500, rng), identities, 0.66, rng)
    built = graph_search(faces, approximate=True)
    assert isinstance(built, HnswSearch)
    search = pickle.loads(pickle.dumps(HnswSearch(built.index, chunk=1000)))
    assert search.units == 5
    edges = neighbour_edges(faces, search=search)
    assert neighbour_recall(faces, edges, rng.choice(len(faces), 500, replace=False)) >= RECALL_FLOOR
    same_identity = identities[edges[0]] == identities[edges[1]]
    assert same_identity.sum() >= SAME_IDENTITY_FLOOR * len(faces) * 9
    scores = cluster_scores(graph_average_linkage(faces, *edges, THRESHOLD).tolist(), identities.tolist())
    assert scores.pairwise_f1 >= 0.999


def test_graph_linkage_of_no_faces_and_of_faces_without_edges():
    assert graph_average_linkage(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0), 0.4).shape == (0,)
    faces = np.eye(3, dtype=np.float32)
    assert graph_average_linkage(faces, np.zeros(0), np.zeros(0), np.zeros(0), 0.4).tolist() == [0, 1, 2]


def assert_same_best_match(indexed: IndexedIdentities, exact: OnlineIdentities, vector: np.ndarray) -> None:
    """The same identity where one reaches the threshold (below it, the order of the misses may differ)."""
    identity, cosine = exact.best_match(vector)
    found, found_cosine = indexed.best_match(vector)
    if cosine >= THRESHOLD:
        assert (found, found_cosine) == (identity, pytest.approx(cosine, abs=1e-5))
    else:
        assert found_cosine < THRESHOLD


def test_indexed_identities_answer_as_the_exact_scan(lfw_faces, monkeypatch):
    monkeypatch.setattr(indexed_identities, "MIN_INDEXED", 50)
    monkeypatch.setattr(indexed_identities, "CANDIDATES", 16)  # a tenth of the identities
    monkeypatch.setattr(indexed_identities, "MAX_CHANGED", 20)
    vectors, people, qualities = lfw_faces
    first = np.array([np.flatnonzero(people == p)[0] for p in dict.fromkeys(people)])
    later = np.setdiff1d(np.arange(len(vectors)), first)
    exact = OnlineIdentities(vectors.shape[1], THRESHOLD, 0.0)
    indexed = IndexedIdentities(vectors.shape[1], THRESHOLD, 0.0)
    ids = np.arange(1, len(first) + 1)
    for online in (exact, indexed):  # a history: each person's first photo, one identity each
        online.rebuild(vectors[first], ids)
    assert indexed.settle() and len(indexed) > 3 * 50

    builds = 0
    for row in later:  # the other photos arrive: same identity joined, or the same new one seeded
        assert_same_best_match(indexed, exact, vectors[row])
        assert indexed.assign(vectors[row], qualities[row]) == exact.assign(vectors[row], qualities[row])
        if indexed._build is not None:  # a new index is built from a snapshot in the background
            indexed._build.result()
            builds += 1
    indexed.settle()
    assert builds >= 3 and len(indexed._changed) < 20
    joined = sum(exact.count(identity) > 1 for identity in exact.ids())
    assert joined >= 0.9 * len({people[row] for row in later})

    a, b, last = *exact.ids()[:2], exact.ids()[-1]
    for online in (exact, indexed):  # a merged identity's mean is found at once, a removed one never
        online.merge(a, b)
        online.remove(last)
    for row in first:
        assert_same_best_match(indexed, exact, vectors[row])
    assert indexed.ids() == exact.ids() and UNASSIGNED not in indexed.ids()
