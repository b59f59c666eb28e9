"""Face quality: head pose from the five landmarks, sharpness, size, and one combined score."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# A generic head in millimetres, camera axes (x right, y down, z away from the camera), nose tip at
# the origin: right eye, left eye, nose tip, right and left mouth corner (YuNet's landmark order).
HEAD_MODEL = np.array(
    [[-31.0, -34.0, 32.0], [31.0, -34.0, 32.0], [0.0, 0.0, 0.0], [-25.0, 31.0, 27.0], [25.0, 31.0, 27.0]],
    dtype=np.float64,
)
FULL_SIZE_PX = 80.0
SHARPNESS_SCALE = 120.0
QUALITY_WEIGHTS = {"detection": 1.0, "size": 1.0, "sharpness": 1.0, "pose": 2.0}


@dataclass(frozen=True)
class Pose:
    """Head pose in degrees. Yaw > 0: the face turns towards the image's right; pitch > 0: the face
    looks up; roll > 0: the head tilts clockwise in the image."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class Quality:
    """Quality factors in [0, 1] and their weighted geometric mean ``score``."""

    score: float
    detection: float
    size: float
    sharpness: float
    pose: float


def estimate_pose(landmarks: np.ndarray) -> Pose:
    """Head pose from the 5 landmarks.

    Roll is the angle of the eye line. Yaw and pitch come from fitting :data:`HEAD_MODEL` (PnP with
    a long focal length, close to weak perspective) to the landmarks rotated upright.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_vector = points[1] - points[0]
    eye_distance = max(float(np.linalg.norm(eye_vector)), 1e-6)
    roll = float(np.arctan2(eye_vector[1], eye_vector[0]))
    cos_r, sin_r = np.cos(-roll), np.sin(-roll)
    upright = (points - points[2]) @ np.array([[cos_r, sin_r], [-sin_r, cos_r]])
    focal = eye_distance * 40.0
    camera = np.array([[focal, 0, 0], [0, focal, 0], [0, 0, 1]], dtype=np.float64)
    translation_guess = np.array([0.0, 0.0, focal * 62.0 / eye_distance])
    ok, rvec, _ = cv2.solvePnP(HEAD_MODEL, upright, camera, None, np.zeros(3), translation_guess,
                               useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return Pose(0.0, 0.0, float(np.degrees(roll)))
    matrix, _ = cv2.Rodrigues(rvec)
    pitch, yaw, _ = cv2.RQDecomp3x3(matrix)[0]
    return Pose(yaw=float(-yaw), pitch=float(pitch), roll=float(np.degrees(roll)))


def sharpness(chip: np.ndarray) -> float:
    """Variance of the Laplacian of the grey aligned chip (higher is sharper)."""
    grey = cv2.cvtColor(chip, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def assess_quality(detection_score: float, face_width: float, face_height: float,
                   chip: np.ndarray, pose: Pose) -> Quality:
    """Combine detection confidence, face size, sharpness and pose into one score in [0, 1]."""
    size_factor = float(np.clip(min(face_width, face_height) / FULL_SIZE_PX, 0.0, 1.0))
    sharp = sharpness(chip)
    sharp_factor = float(sharp / (sharp + SHARPNESS_SCALE))
    pose_factor = float(np.clip(np.cos(np.radians(pose.yaw)) * np.cos(np.radians(pose.pitch)), 0, 1))
    factors = {"detection": float(np.clip(detection_score, 0, 1)), "size": size_factor,
               "sharpness": sharp_factor, "pose": pose_factor}
    total = sum(QUALITY_WEIGHTS.values())
    log_score = sum(QUALITY_WEIGHTS[k] * np.log(max(v, 1e-6)) for k, v in factors.items()) / total
    return Quality(score=float(np.exp(log_score)), detection=factors["detection"],
                   size=size_factor, sharpness=sharp_factor, pose=pose_factor)
