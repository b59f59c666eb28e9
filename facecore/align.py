"""Five-point similarity alignment to the 112x112 template of ArcFace-family models."""

from __future__ import annotations

import cv2
import numpy as np

CHIP_SIZE = 112
# Right eye, left eye (image left first), nose tip, right and left mouth corner, in a 112x112 chip.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transforms(sources: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping each of ``(N, K, 2)``
    point sets to the ``(K, 2)`` target: Umeyama's closed form, all N at once; ``(N, 2, 3)``."""
    src = np.asarray(sources, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    points = src.shape[1]
    src_mean, dst_mean = src.mean(axis=1, keepdims=True), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = np.einsum("ki,nkj->nij", dst_c, src_c) / points
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones((len(src), 2))
    signs[np.linalg.det(u) * np.linalg.det(vt) < 0, 1] = -1
    rotation = (u * signs[:, None, :]) @ vt
    variance = (src_c ** 2).sum(axis=(1, 2)) / points
    scale = np.where(variance > 0, (singular * signs).sum(axis=1) / np.maximum(variance, 1e-12), 1.0)
    matrices = np.empty((len(src), 2, 3))
    matrices[:, :, :2] = scale[:, None, None] * rotation
    matrices[:, :, 2] = dst_mean - np.einsum("nij,nj->ni", matrices[:, :, :2], src_mean[:, 0])
    return matrices


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """:func:`similarity_transforms` of one ``(K, 2)`` point set; the ``(2, 3)`` affine matrix."""
    return similarity_transforms(np.asarray(source)[None], target)[0]


def align_faces(image: np.ndarray, landmarks: np.ndarray, out: np.ndarray | None = None,
                size: int = CHIP_SIZE) -> np.ndarray:
    """Warp the faces with these ``(N, 5, 2)`` landmarks to upright chips, written into ``out``
    (``(N, size, size, 3)`` uint8, allocated when None) and returned."""
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    if out is None:
        out = np.empty((len(landmarks), size, size, 3), dtype=np.uint8)
    for matrix, chip in zip(similarity_transforms(landmarks, ARCFACE_TEMPLATE * (size / CHIP_SIZE)), out):
        cv2.warpAffine(image, matrix, (size, size), dst=chip, flags=cv2.INTER_LINEAR, borderValue=0)
    return out


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """Warp the face with these 5 landmarks to an upright ``(size, size, 3)`` chip."""
    return align_faces(image, np.asarray(landmarks)[None], size=size)[0]
