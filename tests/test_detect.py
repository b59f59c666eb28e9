"""YuNet detection on real photos: recall on annotated group photos, coordinates on large images."""

from __future__ import annotations

import csv
from collections import defaultdict

import cv2
import numpy as np
import pytest

from facecore.detect import box_iou, nms
from facecore.images import decode_image


def annotated_boxes(data_dir):
    boxes = defaultdict(list)
    with open(data_dir / "group" / "boxes_dlib.tsv") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            left, top, width, height = (float(row[k]) for k in ("left", "top", "width", "height"))
            boxes[row["file"]].append((np.array([left, top, left + width, top + height]), row["ignore"] == "1"))
    return boxes


def test_group_photos_recall_and_false_detections(data_dir, pipeline):
    truth = annotated_boxes(data_dir)
    assert len(truth) == 7
    found = missed = false = 0
    for name, boxes in truth.items():
        faces = pipeline.detect([(data_dir / "group" / name).read_bytes()])[0]
        predicted = np.array([face.box for face in faces]).reshape(-1, 4)
        matched = set()
        for box, ignore in boxes:
            ious = box_iou(box, predicted) if len(predicted) else np.zeros(0)
            hit = int(ious.argmax()) if ious.size and ious.max() >= 0.3 else None
            if hit is not None:
                matched.add(hit)
            if not ignore:
                found, missed = found + (hit is not None), missed + (hit is None)
        false += len(predicted) - len(matched)
    assert found / (found + missed) >= 0.95
    assert false <= 2


@pytest.mark.parametrize("name", ["face_recognition_obama_and_biden.jpg", "dlib_bald_guys.jpg"])
def test_large_photos_map_back_to_original_coordinates(data_dir, pipeline, name):
    """Each face found in the shrunk photo is found again, at the same place, in a crop around it."""
    image = decode_image((data_dir / "group" / name).read_bytes())
    assert max(image.shape[:2]) > 1500
    faces = pipeline.detect([image])[0]
    assert len(faces) >= (2 if "obama" in name else 20)
    for face in faces[:4]:
        x1, y1, x2, y2 = face.box
        margin = max(x2 - x1, y2 - y1)
        left, top = int(max(0, x1 - margin)), int(max(0, y1 - margin))
        crop = image[top:int(y2 + margin), left:int(x2 + margin)]
        again = pipeline.detect([crop], det_prob_threshold=0.5)[0]
        shifted = np.array([f.box for f in again]).reshape(-1, 4) + [left, top, left, top]
        assert box_iou(face.box, shifted).max() >= 0.6


def test_batched_detection_equals_one_by_one(data_dir, pipeline):
    paths = sorted((data_dir / "group").glob("dlib_2008_*.jpg"))[:4]
    images = [decode_image(p.read_bytes()) for p in paths]
    batched = pipeline.detector.detect_batch(images, threshold=0.8)
    for image, together in zip(images, batched):
        alone = pipeline.detector.detect_batch([image], threshold=0.8)[0]
        assert len(alone) == len(together) > 0
        for a, b in zip(alone, together):
            assert np.abs(a.box - b.box).max() < 2.0
            assert np.abs(a.landmarks - b.landmarks).max() < 2.0


def test_threshold_and_limit(data_dir, pipeline):
    data = (data_dir / "group" / "dlib_2007_007763.jpg").read_bytes()
    everything = pipeline.detect([data], det_prob_threshold=0.5)[0]
    strict = pipeline.detect([data], det_prob_threshold=0.9)[0]
    largest_two = pipeline.detect([data], det_prob_threshold=0.5, limit=2)[0]
    assert len(everything) > len(strict)
    assert all(face.score >= 0.9 for face in strict)
    areas = [face.box[2:].prod() for face in everything]
    assert len(largest_two) == 2
    assert [f.score for f in largest_two] == [f.score for f in everything[:2]]
    assert all((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) >= (g.box[2] - g.box[0]) * (g.box[3] - g.box[1])
               for f, g in zip(everything, everything[1:]))
    assert len(areas) == len(everything)


def test_landmarks_lie_inside_their_box(data_dir, pipeline):
    faces = pipeline.detect([(data_dir / "group" / "dlib_2008_001322.jpg").read_bytes()])[0]
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert np.all((face.landmarks[:, 0] >= x1) & (face.landmarks[:, 0] <= x2))
        assert np.all((face.landmarks[:, 1] >= y1) & (face.landmarks[:, 1] <= y2))
        assert face.landmarks[0, 0] < face.landmarks[1, 0]  # right eye of the person is on image left


def test_nms_keeps_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.8, 0.9, 0.7], dtype=np.float32)
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]


def test_large_jpegs_are_decoded_reduced_with_the_same_faces(data_dir, pipeline):
    """A 6000x4284 JPEG is decoded at half size; faces come back in full-size coordinates, as found in
    the full decode, with the same embeddings."""
    photo = cv2.imread(str(data_dir / "group" / "face_recognition_obama_and_biden.jpg"))
    large = cv2.resize(photo, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    blob = cv2.imencode(".jpg", large, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
    reduced = decode_image(blob, min_side=pipeline.config.decode_min_side)
    assert reduced.reduction == 2 and reduced.shape[:2] == (2142, 3000) and reduced.full_size == (4284, 6000)
    from_reduced = pipeline.analyze([blob])[0]
    from_full = pipeline.analyze([decode_image(blob)])[0]
    assert len(from_reduced) == len(from_full) >= 3
    for small, full in zip(from_reduced, from_full):
        assert box_iou(small.box, full.box[None])[0] >= 0.95
        assert np.abs(small.landmarks - full.landmarks).max() < 0.05 * (full.box[2] - full.box[0])
        assert float(small.embedding @ full.embedding) >= 0.98
