"""dlib's face ResNet ported to PyTorch and run as ONNX by the platform's backends, against dlib itself
(``dlib-bin``): the same descriptors on the same chips, the same chips from the same landmarks, the
same 5-point landmarks in the same boxes; and the fusion of SFace with it."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from facecore.align import DLIB_FIVE_POINT_SHAPE, dlib_chip_template, dlib_face_chips
from facecore.backends import BackendOptions
from facecore.dlib_landmarks import dlib_chips, dlib_rectangles, five_point_predictor, intensity_of
from facecore.embed import FUSION, ChipEmbedder, l2_normalize
from facecore.models import DLIB_RESNET
from facecore.pipeline import FacePipeline, PipelineConfig


def _weights(name: str) -> str:
    return str(importlib.resources.files("face_recognition_models").joinpath("models", name))


@pytest.fixture(scope="module")
def dlib_models():
    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(_weights("shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(_weights("dlib_face_recognition_resnet_model_v1.dat")))


def _dlib_faces(paths: list[Path], dlib_models):
    """(rgb image, dlib's 5-point shape) of the largest face dlib finds in each image (no upsampling:
    LFW's faces are large enough)."""
    detector, shapes, _ = dlib_models
    found = []
    for path in paths:
        rgb = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
        boxes = detector(rgb, 0)
        if boxes:
            found.append((rgb, shapes(rgb, max(boxes, key=lambda box: box.area()))))
    return found


def test_port_matches_dlib_on_lfw_dev_chips(data_dir, models_dir, dlib_models):
    """The first photo of every third lfw-dev person (54 faces; all 522 photos took minutes here):
    dlib's own chip, embedded by dlib and by the ONNX graph built from the port (default backend,
    float32), agree to cosine >= 0.9999 on every face."""
    people = sorted(person for person in (data_dir / "lfw-dev").iterdir() if person.is_dir())[::3]
    faces = _dlib_faces([sorted(person.glob("*.jpg"))[0] for person in people], dlib_models)
    assert len(faces) >= 50
    chips = np.stack([dlib.get_face_chip(rgb, shape, 150, 0.25) for rgb, shape in faces])
    reference = l2_normalize(np.stack([np.asarray(dlib_models[2].compute_face_descriptor(chip)) for chip in chips]))
    port = ChipEmbedder.from_registry(BackendOptions(precision="f32", cache_dir=models_dir), DLIB_RESNET)
    ported = port.embed(np.ascontiguousarray(chips[..., ::-1]))  # the platform's chips are BGR
    cosines = np.sum(reference * ported, axis=1)
    assert cosines.min() >= 0.9999, f"lowest cosine {cosines.min():.6f} at face {int(cosines.argmin())}"
    assert ported.shape == (len(faces), 128)


def test_chip_alignment_matches_dlib(data_dir, dlib_models):
    """From the same five landmarks, dlib_face_chips cuts dlib's get_face_chip(size=150, padding=0.25)."""
    paths = sorted((data_dir / "lfw-dev").glob("A*/*_0001.jpg"))[:6] + [data_dir / "group" / "dlib_2007_007763.jpg"]
    faces = _dlib_faces(paths, dlib_models)
    template = dlib_chip_template(DLIB_FIVE_POINT_SHAPE)
    for rgb, shape in faces:
        points = np.array([[part.x, part.y] for part in shape.parts()], dtype=np.float64)
        expected = np.asarray(dlib.get_face_chip(rgb, shape, 150, 0.25)).astype(int)
        chip = dlib_face_chips(rgb, points, template)[0].astype(int)
        difference = np.abs(expected - chip)
        assert difference.max() <= 1 and difference.mean() < 0.01


def test_landmarks_and_chips_match_dlib_in_detector_boxes(data_dir, pipeline, dlib_models):
    """In the platform detector's boxes (lfw-dev, its small-face twin lfw-dev-raw150 and a group
    photo), the numpy port of dlib's 5-point model finds exactly dlib's landmarks, and dlib_chips
    cuts the chip dlib's get_face_chip cuts from them."""
    _, shapes, _ = dlib_models
    paths = [data_dir / folder / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg" for folder in ("lfw-dev", "lfw-dev-raw150")]
    paths += sorted((data_dir / "lfw-dev-raw150").glob("B*/*_0001.jpg"))[:6]
    paths.append(data_dir / "group" / "dlib_2007_007763.jpg")
    images = [cv2.imread(str(path)) for path in paths]
    faces = pipeline.detect(images)
    boxes = [np.stack([face.box[:4] for face in found]) for found in faces]
    landmarks = [np.stack([face.landmarks for face in found]) for found in faces]
    rgbs = [np.ascontiguousarray(image[:, :, ::-1]) for image in images]
    expected = [shapes(rgb, dlib.rectangle(*(int(v) for v in corners)))
                for rgb, per_image in zip(rgbs, boxes) for corners in dlib_rectangles(per_image)]
    owners = np.repeat(np.arange(len(images)), [len(per_image) for per_image in boxes])
    found = five_point_predictor().predict([intensity_of(image) for image in images], owners,
                                           dlib_rectangles(np.concatenate(boxes)))
    reference_points = np.array([[[part.x, part.y] for part in shape.parts()] for shape in expected], np.float64)
    assert np.array_equal(found, reference_points)
    chips = dlib_chips(images, landmarks, boxes).astype(int)
    reference = np.stack([np.asarray(dlib.get_face_chip(rgbs[owner], shape, 150, 0.25))[:, :, ::-1]
                          for owner, shape in zip(owners, expected)])
    assert np.abs(chips - reference).max() <= 1 and np.abs(chips - reference).mean() < 0.01
    assert len(expected) >= 14


def test_fusion_cosine_is_the_weighted_mean_of_its_models(data_dir, models_dir):
    """A fused vector holds each member's unit embedding scaled by its weight: the cosine of two fused
    vectors is the members' cosines averaged with the squared weights, and same-person pairs score higher."""
    people = data_dir / "lfw-dev" / "Abel_Pacheco"
    images = [(people / name).read_bytes() for name in ("Abel_Pacheco_0001.jpg", "Abel_Pacheco_0002.jpg")]
    images.append((data_dir / "lfw-dev" / "Andy_Hebb" / "Andy_Hebb_0001.jpg").read_bytes())
    fused, members = {}, {}
    for model in ("fusion", "sface", "dlib-resnet"):
        pipeline = FacePipeline(PipelineConfig(threads=2, cache_dir=str(models_dir), precision="f32", model=model))
        vectors = np.stack([found[0] for found in pipeline.embed(images, limit=1)])
        (fused if model == "fusion" else members)[model] = vectors
    vectors = fused["fusion"]
    assert vectors.shape == (3, FUSION.embedding_dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    squared = np.square(FUSION.weights)
    expected = sum(w * (members[spec.name] @ members[spec.name].T) for w, spec in zip(squared, FUSION.members))
    assert np.allclose(vectors @ vectors.T, expected / squared.sum(), atol=1e-4)
    assert (vectors[0] @ vectors[1]) > (vectors[0] @ vectors[2]) + 0.2
