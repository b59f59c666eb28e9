"""The aligned context crop stored with each face: large enough to cut every embedding model's chip.

A context crop is the ArcFace-aligned face (:data:`facecore.align.ARCFACE_TEMPLATE`) at twice the
112x112 chip's resolution with a margin around it: ``CONTEXT_SIZE`` (288) pixels square, the
five landmarks warped onto :data:`CONTEXT_TEMPLATE`. From it, without the original image:

- the 112x112 chip (SFace's, and the thumbnail) is every other pixel of its central 224x224 square:
  the warp onto the doubled, shifted template samples the photo at exactly the points the 112 chip's
  warp samples, so these are the very pixels of the chip cut from the photo (before JPEG);
- dlib's 150x150 chip (its face box with 0.25 padding: 1.5 box widths, reaching lower below the
  mouth than the 112 chip, at 56 pixels per eye distance where the 112 chip has 35) is cut from the
  template's points, where the face's landmarks were warped to, through dlib's mean face: the
  detector box is not stored, so not from dlib's own landmarks as from a photo (dlib's ResNet alone
  scored 0.9883 on lfw-dev so placed, against 0.9917).

Faces stored before context crops hold the 112x112 chip itself: it still gives the thumbnail and
the 112 chip, but not dlib's chip (too tight and too coarse): :func:`chip_from_crop` refuses it.
"""

from __future__ import annotations

import cv2
import numpy as np

from facecore.align import ARCFACE_TEMPLATE, CHIP_SIZE, similarity_transforms
from facecore.dlib_landmarks import dlib_chips
from facecore.errors import FaceError
from facecore.images import decode_image, encode_jpeg

CONTEXT_SCALE = 2
CONTEXT_MARGIN = 32
CONTEXT_SIZE = CHIP_SIZE * CONTEXT_SCALE + 2 * CONTEXT_MARGIN
CONTEXT_TEMPLATE = ARCFACE_TEMPLATE * CONTEXT_SCALE + CONTEXT_MARGIN


class CropTooTight(FaceError):
    """A stored crop (a face stored before context crops) does not hold the chip a model needs."""


def context_crops(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """``(N, CONTEXT_SIZE, CONTEXT_SIZE, 3)`` context crops of the faces with these ``(N, 5, 2)`` landmarks."""
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    crops = np.empty((len(landmarks), CONTEXT_SIZE, CONTEXT_SIZE, 3), dtype=np.uint8)
    for matrix, crop in zip(similarity_transforms(landmarks, CONTEXT_TEMPLATE), crops):
        cv2.warpAffine(image, matrix, (CONTEXT_SIZE, CONTEXT_SIZE), dst=crop, flags=cv2.INTER_LINEAR, borderValue=0)
    return crops


def is_context_crop(crop: np.ndarray) -> bool:
    return crop.shape[:2] == (CONTEXT_SIZE, CONTEXT_SIZE)


def chip_from_crop(crop: np.ndarray, kind: str) -> np.ndarray:
    """The chip of ``kind`` (``arcface112``, ``dlib150``) of a decoded stored crop: a context crop, or
    the 112x112 chip of a face stored before them (only ``arcface112`` then: else :class:`CropTooTight`)."""
    if crop.shape[:2] == (CHIP_SIZE, CHIP_SIZE) and kind == "arcface112":
        return crop
    if not is_context_crop(crop):
        side = "x".join(map(str, crop.shape[1::-1]))
        raise CropTooTight(f"the stored crop is {side}: a face stored before context crops, too tight for the {kind} "
                           "chip; re-enroll it from a photo")
    if kind == "arcface112":
        inner = slice(CONTEXT_MARGIN, CONTEXT_SIZE - CONTEXT_MARGIN, CONTEXT_SCALE)
        return np.ascontiguousarray(crop[inner, inner])
    return dlib_chips([crop], [CONTEXT_TEMPLATE[None]])[0]


def thumbnail_jpeg(stored: bytes) -> bytes:
    """The 112x112 JPEG thumbnail of a stored crop (the crop itself for a face stored before context crops)."""
    crop = decode_image(stored)
    if not is_context_crop(crop):
        return stored
    return encode_jpeg(chip_from_crop(crop, "arcface112"))


def chips_of_crops(crops: list[bytes], kinds: list[str]) -> tuple[dict[str, np.ndarray], list[str | None]]:
    """The chips of every kind in ``kinds`` cut from stored crops (JPEG bytes), stacked per kind, of
    the crops that hold them all; and per crop None, or why it does not (an undecodable crop, or one
    too tight: :func:`chip_from_crop`)."""
    cut: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
    errors: list[str | None] = [None] * len(crops)
    for row, stored in enumerate(crops):
        try:
            crop = decode_image(stored or b"")
            chips = {kind: chip_from_crop(crop, kind) for kind in kinds}
        except FaceError as exc:
            errors[row] = f"unusable crop: {exc}"
            continue
        for kind, chip in chips.items():
            cut[kind].append(chip)
    return {kind: np.stack(chips) for kind, chips in cut.items() if chips}, errors
