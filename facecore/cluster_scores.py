"""How well a clustering matches the true identities: pairwise and BCubed precision, recall and F1.

Pairwise: over all pairs of items, a pair is predicted together when both share a cluster and truly
together when both share an identity. BCubed (Bagga and Baldwin): per item, the share of its cluster
that is its identity (precision) and of its identity that is in its cluster (recall), averaged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterScores:
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _pairs(counts) -> int:
    return sum(n * (n - 1) // 2 for n in counts)


def cluster_scores(clusters: Sequence[Hashable], identities: Sequence[Hashable]) -> ClusterScores:
    """Scores of cluster labels ``clusters`` against true ``identities``, one of each per item."""
    if len(clusters) != len(identities) or not clusters:
        raise ValueError("one cluster and one identity per item, and at least one item")
    both = Counter(zip(clusters, identities))
    per_cluster, per_identity = Counter(clusters), Counter(identities)
    together = _pairs(both.values())
    predicted, true = _pairs(per_cluster.values()), _pairs(per_identity.values())
    precision = together / predicted if predicted else 1.0
    recall = together / true if true else 1.0
    items = len(clusters)
    b_precision = sum(n * n / per_cluster[c] for (c, _), n in both.items()) / items
    b_recall = sum(n * n / per_identity[i] for (_, i), n in both.items()) / items
    return ClusterScores(precision, recall, _f1(precision, recall), b_precision, b_recall,
                         _f1(b_precision, b_recall))
