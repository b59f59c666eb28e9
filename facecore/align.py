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
    point sets to the ``(K, 2)`` target (or each to its own, ``(N, K, 2)``): Umeyama's closed form,
    all N at once; ``(N, 2, 3)``."""
    src = np.asarray(sources, dtype=np.float64)
    dst = np.broadcast_to(np.asarray(target, dtype=np.float64), src.shape)
    points = src.shape[1]
    src_mean, dst_mean = src.mean(axis=1, keepdims=True), dst.mean(axis=1)
    src_c, dst_c = src - src_mean, dst - dst_mean[:, None]
    covariance = np.einsum("nki,nkj->nij", dst_c, src_c) / points
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


# dlib's face chip (get_face_chip_details / extract_image_chip, as its face ResNet expects it): 150x150
# with padding 0.25 around dlib's mean face shape, fitted to dlib's 5-point landmarks (the outer and
# inner corners of the eyes, the base of the nose: :mod:`facecore.dlib_landmarks`), whose places in
# that mean face, in units of the face box, are DLIB_FIVE_POINT_SHAPE (get_face_chip_details' constants).
# A face known only by the platform detector's five points (eye centres, nose tip, mouth corners) is
# fitted with those points' places in the same mean face's 68 points instead (eye centres as means of
# the six eye points 36-41 and 42-47, nose tip 30, mouth corners 48 and 54): DLIB_MEAN_FACE.
DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25
DLIB_FIVE_POINT_SHAPE = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                                  [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                                  [0.4901123135679, 0.6277975316475]])
DLIB_MEAN_FACE = np.array([
    [(0.121737 + 0.187122 + 0.265825 + 0.334606 + 0.260918 + 0.182743) / 6,
     (0.216423 + 0.178758 + 0.179852 + 0.231733 + 0.245099 + 0.244077) / 6],
    [(0.645647 + 0.714428 + 0.793132 + 0.858516 + 0.79751 + 0.719335) / 6,
     (0.231733 + 0.179852 + 0.178758 + 0.216423 + 0.244077 + 0.245099) / 6],
    [0.490127, 0.515625],
    [0.254149, 0.780233],
    [0.726104, 0.780233],
])


def dlib_chip_template(shape: np.ndarray = DLIB_MEAN_FACE, size: int = DLIB_CHIP_SIZE,
                       padding: float = DLIB_CHIP_PADDING) -> np.ndarray:
    """Points of a mean face shape (in units of the face box) in dlib's ``size`` chip with ``padding``."""
    return (padding + np.asarray(shape, dtype=np.float64)) / (2 * padding + 1) * size


def dlib_chip_transforms(landmarks: np.ndarray, template: np.ndarray, size: int = DLIB_CHIP_SIZE) -> np.ndarray:
    """``(N, 2, 3)`` maps from chip pixels to image pixels, as dlib's ``chip_details`` builds them:
    the least-squares similarity from ``template`` to each face's points gives the angle, the scale
    and the centre (the image of the chip's point ``size/2``); the chip's corner pixels then map to
    the corners of a ``size*scale`` wide rectangle around that centre, rotated by the angle."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    maps = np.empty((len(landmarks), 2, 3))
    half, corner = np.full(2, size / 2), np.full(2, (size - 1) / 2)
    for index, points in enumerate(landmarks):
        chip_to_image = similarity_transform(template, points)
        linear = chip_to_image[:, :2]
        scale = float(np.hypot(*linear[:, 0]))
        angle = float(np.arctan2(linear[1, 0], linear[0, 0]))
        centre = linear @ half + chip_to_image[:, 2]
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        maps[index, :, :2] = rotation * ((size * scale - 1) / (size - 1))
        maps[index, :, 2] = centre - maps[index, :, :2] @ corner
    return maps


def _bilinear(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """dlib's ``interpolate_bilinear``: black where any of the four neighbours is outside the image."""
    left, top = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < image.shape[1]) & (top + 1 < image.shape[0])
    left, top = np.where(inside, left, 0), np.where(inside, top, 0)
    dx, dy = (xs - left)[..., None], (ys - top)[..., None]
    pixels = image.astype(np.float64)
    value = ((1 - dx) * (1 - dy) * pixels[top, left] + dx * (1 - dy) * pixels[top, left + 1]
             + (1 - dx) * dy * pixels[top + 1, left] + dx * dy * pixels[top + 1, left + 1])
    return np.where(inside[..., None], value, 0).astype(np.uint8)


def dlib_face_chips(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray | None = None,
                    size: int = DLIB_CHIP_SIZE) -> np.ndarray:
    """dlib's face chips ``(N, size, size, 3)`` of the faces with these ``(N, 5, 2)`` landmarks.

    ``template``: the landmarks' places in the chip (default: the platform detector's five points in
    dlib's chip, :data:`DLIB_MEAN_FACE`). Like dlib, a face more than twice the chip's size is taken
    from the image halved (repeatedly) first, so the chip does not alias; dlib halves with its own
    pyramid filter, this with OpenCV's 5-tap Gaussian ``pyrDown``, so only such chips differ slightly.
    """
    template = dlib_chip_template() if template is None else template
    maps = dlib_chip_transforms(np.asarray(landmarks, np.float64).reshape(-1, 5, 2), template, size)
    grid = np.stack(np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64)), -1)
    chips = np.empty((len(maps), size, size, 3), dtype=np.uint8)
    levels = [image]
    for index, chip_to_image in enumerate(maps):
        level = 0
        scale = float(np.hypot(*chip_to_image[:, 0]))
        while scale / 2 ** (level + 1) > 1.0:
            level += 1
            if level == len(levels):
                levels.append(cv2.pyrDown(levels[-1]))
        mapped = grid @ (chip_to_image[:, :2].T / 2 ** level) + chip_to_image[:, 2] / 2 ** level
        chips[index] = _bilinear(levels[level], mapped[..., 0], mapped[..., 1])
    return chips

