"""The LFW verification protocol on any pairs file in LFW format.

A pairs file starts with ``folds<TAB>n`` and then, fold after fold, ``n`` same-person lines
``Name i j`` followed by ``n`` different-person lines ``Name1 i Name2 j``; image ``i`` of ``Name`` is
``root/Name/Name_%04d.jpg``. With k > 1 folds the threshold is chosen on k-1 folds and scored on
the remaining one; a one-fold file is split into 10 folds with a seeded shuffle. A pair whose image
has no detected face counts as wrong at every threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SINGLE_FOLD_SPLITS = 10
SPLIT_SEED = 0


@dataclass(frozen=True)
class Pair:
    first: Path
    second: Path
    same: bool
    fold: int


@dataclass
class EvaluationReport:
    """What ``faces eval-pairs`` prints."""

    pairs: int
    folds: int
    accuracy_mean: float
    accuracy_std: float
    threshold: float
    tar_at_far_1e3: float | None
    tar_note: str
    images: int
    images_without_face: int
    pairs_without_face: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def labelled_face(faces: list, image_shape: tuple[int, ...]):
    """The face an LFW-style image is labelled with: LFW's photos are cropped around it, so it is the
    detected face whose box centre is nearest the image centre (others are people in the background,
    sometimes larger where they are cut by the border); None when no face was found."""
    if not faces:
        return None
    centre = np.array([image_shape[1], image_shape[0]], dtype=np.float64) / 2
    return min(faces, key=lambda face: float(np.hypot(*((face.box[:2] + face.box[2:4]) / 2 - centre))))


def image_path(root: Path, name: str, number: str) -> Path:
    return root / name / f"{name}_{int(number):04d}.jpg"


def parse_pairs(pairs_file: Path, root: Path) -> list[Pair]:
    """Read an LFW-format pairs file; folds of a one-fold file are assigned by a seeded split."""
    lines = [line.split() for line in Path(pairs_file).read_text().splitlines() if line.strip()]
    if not lines or len(lines[0]) > 2 or not all(tok.isdigit() for tok in lines[0]):
        raise ValueError(f"{pairs_file}: first line must be '<folds> <pairs per kind>'")
    folds, per_kind = (int(lines[0][0]), int(lines[0][1])) if len(lines[0]) == 2 else (1, int(lines[0][0]))
    body = lines[1:]
    if len(body) != folds * per_kind * 2:
        raise ValueError(f"{pairs_file}: expected {folds * per_kind * 2} pairs, found {len(body)}")
    pairs = []
    for index, fields in enumerate(body):
        fold = index // (2 * per_kind)
        if len(fields) == 3:
            pairs.append(Pair(image_path(root, fields[0], fields[1]), image_path(root, fields[0], fields[2]),
                              True, fold))
        elif len(fields) == 4:
            pairs.append(Pair(image_path(root, fields[0], fields[1]), image_path(root, fields[2], fields[3]),
                              False, fold))
        else:
            raise ValueError(f"{pairs_file}: line {index + 2} has {len(fields)} fields, expected 3 or 4")
    if folds == 1:
        order = np.random.default_rng(SPLIT_SEED).permutation(len(pairs))
        split = np.empty(len(pairs), dtype=int)
        split[order] = np.arange(len(pairs)) % SINGLE_FOLD_SPLITS
        pairs = [Pair(p.first, p.second, p.same, int(split[i])) for i, p in enumerate(pairs)]
    return pairs


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Share of pairs judged right with ``score >= threshold`` meaning 'same'. NaN scores are wrong."""
    predicted = np.nan_to_num(scores, nan=-np.inf) >= threshold
    valid = ~np.isnan(scores)
    return float(np.mean((predicted == same) & valid))


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Threshold that maximises accuracy; the midpoint between neighbouring scores."""
    finite = np.unique(scores[~np.isnan(scores)])
    if finite.size == 0:
        return 0.0
    candidates = np.concatenate([[finite[0] - 1e-6], (finite[:-1] + finite[1:]) / 2, [finite[-1] + 1e-6]])
    accuracies = [accuracy_at(scores, same, t) for t in candidates]
    return float(candidates[int(np.argmax(accuracies))])


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> tuple[float | None, str]:
    """True-accept rate at a false-accept rate, when there are enough impostor pairs to resolve it."""
    impostors = np.sort(np.nan_to_num(scores[~same], nan=-np.inf))[::-1]
    if impostors.size < int(np.ceil(1.0 / far)):
        return None, f"needs >= {int(np.ceil(1 / far))} different-person pairs, file has {impostors.size}"
    allowed = int(np.floor(far * impostors.size))
    threshold = impostors[allowed] if allowed < impostors.size else -np.inf
    genuine = np.nan_to_num(scores[same], nan=-np.inf)
    return float(np.mean(genuine > threshold)), f"{impostors.size} different-person pairs"


def evaluate_pairs(pairs: list[Pair], embed_images: Callable[[list[Path]], dict[Path, np.ndarray | None]]
                   ) -> EvaluationReport:
    """Score every pair by cosine similarity of its two images' embeddings and run the protocol.

    ``embed_images`` maps image paths to a unit-length embedding, or ``None`` where no face was found.
    """
    unique = sorted({p.first for p in pairs} | {p.second for p in pairs})
    vectors = embed_images(unique)
    scores = np.array([
        float(vectors[p.first] @ vectors[p.second])
        if vectors.get(p.first) is not None and vectors.get(p.second) is not None else np.nan
        for p in pairs
    ])
    same = np.array([p.same for p in pairs])
    fold_of = np.array([p.fold for p in pairs])
    accuracies, thresholds = [], []
    for fold in np.unique(fold_of):
        train, test = fold_of != fold, fold_of == fold
        threshold = best_threshold(scores[train], same[train])
        thresholds.append(threshold)
        accuracies.append(accuracy_at(scores[test], same[test], threshold))
    tar, note = tar_at_far(scores, same, 1e-3)
    return EvaluationReport(
        pairs=len(pairs), folds=len(accuracies),
        accuracy_mean=float(np.mean(accuracies)), accuracy_std=float(np.std(accuracies)),
        threshold=float(np.mean(thresholds)), tar_at_far_1e3=tar, tar_note=note,
        images=len(unique), images_without_face=sum(1 for v in vectors.values() if v is None),
        pairs_without_face=int(np.isnan(scores).sum()),
    )
