"""Calibrated similarity: cosine of two embeddings mapped to a score in [0, 1].

CompreFace reports a "similarity" in [0, 1] and its users threshold it (0.85 is common). We map the
SFace cosine ``c`` through a logistic curve

    similarity(c) = (tanh(k * (c - c0)) + 1) / 2

whose two constants are fixed by two anchor points:

- ``similarity(COSINE_THRESHOLD) = DEFAULT_SIMILARITY_THRESHOLD`` (0.85), where ``COSINE_THRESHOLD``
  is the accuracy-optimal cosine threshold on the lfw-dev pairs (deep-funneled and raw 150x150
  together: accuracy 0.9933 on a plateau from 0.32 to 0.34; we take its centre, 0.33);
- ``similarity(0) = SIMILARITY_AT_ORTHOGONAL`` (0.02): unrelated faces score near 0.

So thresholding the similarity at the default 0.85 is the best-accuracy decision on the dev pairs,
and the mapping is monotonic, so any other threshold keeps its meaning ("more similar").

1:N recognition needs a stricter threshold than 1:1 verification: a stranger is compared with every
enrolled subject and only the best of those comparisons counts. ``DEFAULT_RECOGNITION_THRESHOLD``
(0.95, cosine 0.40) is calibrated for open-set identification on lfw-dev (150 people enrolled with
one photo, a second photo of each as probes, 12 people enrolled nowhere): on both photo variants,
cosine thresholds from 0.38 to 0.42 keep every correct rank-1 answer and call all 12 strangers
unknown; 0.40 is the centre. Larger galleries hold more look-alikes: raise a service's threshold
as it grows.
"""

from __future__ import annotations

import numpy as np

COSINE_THRESHOLD = 0.33
DEFAULT_SIMILARITY_THRESHOLD = 0.85
SIMILARITY_AT_ORTHOGONAL = 0.02
DEFAULT_RECOGNITION_THRESHOLD = 0.95

_AT_THRESHOLD = np.arctanh(2 * DEFAULT_SIMILARITY_THRESHOLD - 1)
_AT_ZERO = np.arctanh(2 * SIMILARITY_AT_ORTHOGONAL - 1)
STEEPNESS = float((_AT_THRESHOLD - _AT_ZERO) / COSINE_THRESHOLD)
CENTRE = float(-_AT_ZERO / STEEPNESS)


def similarity_from_cosine(cosine: np.ndarray | float) -> np.ndarray | float:
    """Map cosine similarity in [-1, 1] to the calibrated similarity in [0, 1]."""
    return (np.tanh(STEEPNESS * (np.asarray(cosine, dtype=np.float64) - CENTRE)) + 1.0) / 2.0


def cosine_from_similarity(similarity: float) -> float:
    """Inverse of :func:`similarity_from_cosine` (for turning a similarity threshold into a cosine)."""
    clipped = float(np.clip(similarity, 1e-9, 1 - 1e-9))
    return float(CENTRE + np.arctanh(2 * clipped - 1) / STEEPNESS)
