"""Alignment maths, head pose from landmarks, quality factors."""

from __future__ import annotations

import cv2
import numpy as np

from facecore.align import ARCFACE_TEMPLATE, align_face, similarity_transform
from facecore.images import decode_image
from facecore.quality import assess_quality, estimate_pose


def test_similarity_transform_recovers_a_known_transform():
    angle, scale, shift = np.radians(25), 1.7, np.array([12.0, -4.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = ARCFACE_TEMPLATE @ rotation.T + shift
    matrix = similarity_transform(ARCFACE_TEMPLATE, target)
    assert np.allclose(matrix[:, :2], rotation, atol=1e-9)
    assert np.allclose(matrix[:, 2], shift, atol=1e-9)


def test_aligned_chip_puts_landmarks_on_the_template(lfw_image, pipeline):
    face = pipeline.detect([lfw_image], limit=1)[0][0]
    chip = align_face(decode_image(lfw_image), face.landmarks)
    assert chip.shape == (112, 112, 3)
    again = pipeline.detector.detect_batch([cv2.copyMakeBorder(chip, 40, 40, 40, 40, cv2.BORDER_CONSTANT)],
                                           threshold=0.5)[0]
    assert again, "the aligned chip must still show a face"
    x1, y1, x2, y2 = again[0].box - 40
    assert x1 < 56 < x2 and y1 < 56 < y2
    matrix = similarity_transform(face.landmarks, ARCFACE_TEMPLATE)
    mapped = np.hstack([face.landmarks, np.ones((5, 1))]) @ matrix.T
    residual = np.linalg.norm(mapped - ARCFACE_TEMPLATE, axis=1)
    assert residual[:2].max() < 3.5  # the eyes land on the template; the nose moves with yaw
    assert residual.mean() < 4


def test_pose_of_synthetic_landmarks():
    frontal = ARCFACE_TEMPLATE.copy()
    pose = estimate_pose(frontal)
    assert abs(pose.yaw) < 8 and abs(pose.roll) < 1
    centre = frontal.mean(axis=0)
    turn = cv2.getRotationMatrix2D(tuple(centre), -30, 1.0)  # 30 degrees clockwise
    tilted = np.hstack([frontal, np.ones((5, 1))]) @ turn.T
    assert abs(estimate_pose(tilted).roll - 30) < 0.5
    assert abs(estimate_pose(tilted).yaw - pose.yaw) < 1
    turned = frontal.copy()
    turned[2, 0] += 15  # nose far to the image right: the face turns right
    assert estimate_pose(turned).yaw > 20


def test_pose_flips_sign_in_a_mirrored_photo(data_dir, pipeline):
    data = decode_image((data_dir / "lfw-dev" / "Alvaro_Uribe" / "Alvaro_Uribe_0008.jpg").read_bytes())
    original = pipeline.detect([data], limit=1)[0][0].pose
    mirrored = pipeline.detect([np.ascontiguousarray(data[:, ::-1])], limit=1)[0][0].pose
    assert abs(original.yaw) > 15
    assert np.sign(original.yaw) == -np.sign(mirrored.yaw)
    assert abs(original.yaw + mirrored.yaw) < 10


def test_quality_prefers_sharp_large_frontal_faces(lfw_image, pipeline):
    face = pipeline.analyze([lfw_image], limit=1)[0][0]
    assert 0 < face.quality.score <= 1
    blurred = assess_quality(face.score, *(face.box[2:] - face.box[:2]),
                             cv2.GaussianBlur(face.chip, (9, 9), 3), face.pose)
    small = assess_quality(face.score, 20, 20, face.chip, face.pose)
    assert blurred.sharpness < face.quality.sharpness and blurred.score < face.quality.score
    assert small.size < face.quality.size and small.score < face.quality.score
