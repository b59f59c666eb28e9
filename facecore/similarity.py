"""Calibrated similarity: cosine of two embeddings mapped to a score in [0, 1], per embedding model.

CompreFace reports a "similarity" in [0, 1] and its users threshold it (0.85 is common). Each
embedding model's cosine ``c`` is mapped through a logistic curve

    similarity(c) = (tanh(k * (c - c0)) + 1) / 2

whose two constants are fixed by two anchor points. The models' cosines live on different scales
(two SFace photos of different people score about 0, two dlib ResNet ones about 0.75), so each
model has its own curve, and the platform's thresholds (``DEFAULT_SIMILARITY_THRESHOLD`` for 1:1,
``DEFAULT_RECOGNITION_THRESHOLD`` for 1:N, and a service's own) mean the same for every model.

SFace (``sface``):

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

The other models' curves go through ``(verification cosine, 0.85)`` and ``(recognition cosine,
0.95)``, both measured the same way as SFace's on lfw-dev (see :data:`CALIBRATIONS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COSINE_THRESHOLD = 0.33
DEFAULT_SIMILARITY_THRESHOLD = 0.85
SIMILARITY_AT_ORTHOGONAL = 0.02
DEFAULT_RECOGNITION_THRESHOLD = 0.95
DEFAULT_MODEL = "sface"


@dataclass(frozen=True)
class Calibration:
    """One model's logistic cosine -> similarity curve."""

    steepness: float
    centre: float

    @classmethod
    def through(cls, first: tuple[float, float], second: tuple[float, float]) -> "Calibration":
        """The curve through two ``(cosine, similarity)`` anchor points."""
        (c1, s1), (c2, s2) = first, second
        a1, a2 = np.arctanh(2 * s1 - 1), np.arctanh(2 * s2 - 1)
        steepness = float((a2 - a1) / (c2 - c1))
        return cls(steepness, float(c1 - a1 / steepness))

    def similarity(self, cosine: np.ndarray | float) -> np.ndarray | float:
        return (np.tanh(self.steepness * (np.asarray(cosine, dtype=np.float64) - self.centre)) + 1.0) / 2.0

    def cosine(self, similarity: float) -> float:
        clipped = float(np.clip(similarity, 1e-9, 1 - 1e-9))
        return float(self.centre + np.arctanh(2 * clipped - 1) / self.steepness)


def _by_thresholds(verification: float, recognition: float) -> Calibration:
    return Calibration.through((verification, DEFAULT_SIMILARITY_THRESHOLD),
                               (recognition, DEFAULT_RECOGNITION_THRESHOLD))


# Per embedding model (facecore.embed.EMBEDDING_MODELS). dlib-resnet and fusion were measured on
# lfw-dev and lfw-dev-raw150 with the platform's detector, each image's labelled face and each model's
# own chip (dlib's from dlib's own landmarks; the fusion's dlib weight 1.35). Verification cosine: the
# accuracy-optimal threshold on the pairs of both variants (dlib-resnet 0.910 on both; fusion plateaus
# 0.700-0.730 and 0.680-0.690: the cosine between them). Recognition cosine: the centre of the open-set
# range on both (150 people enrolled with one photo, their second photo as probes, 12 people enrolled
# nowhere: every correct rank-1 answer kept, every stranger unknown): fusion 0.727-0.747. dlib's
# ResNet alone has no such cosine (a stranger scores 0.937 where a correct answer scores 0.922), so
# its recognition cosine, 0.93, is the middle of that overlap.
# Re-measure when a model's chip or a fusion's weights change.
CALIBRATIONS: dict[str, Calibration] = {
    DEFAULT_MODEL: Calibration.through((0.0, SIMILARITY_AT_ORTHOGONAL),
                                       (COSINE_THRESHOLD, DEFAULT_SIMILARITY_THRESHOLD)),
    "dlib-resnet": _by_thresholds(0.91, 0.93),
    "fusion": _by_thresholds(0.695, 0.737),
}


def similarity_from_cosine(cosine: np.ndarray | float, model: str = DEFAULT_MODEL) -> np.ndarray | float:
    """Map cosine similarity in [-1, 1] of embedding model ``model`` to the calibrated similarity in [0, 1]."""
    return CALIBRATIONS[model].similarity(cosine)


def cosine_from_similarity(similarity: float, model: str = DEFAULT_MODEL) -> float:
    """Inverse of :func:`similarity_from_cosine` (for turning a similarity threshold into a cosine)."""
    return CALIBRATIONS[model].cosine(similarity)
