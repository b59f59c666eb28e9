"""The face_recognition approach via dlib: HOG detector, 5-point shape, ResNet embedding.

This is what `face_recognition.face_encodings(image)` does with its defaults (HOG, one upsample,
the small 5-point landmark model, no jitter), written against dlib directly.
"""

from __future__ import annotations

import importlib.resources

import dlib
import numpy as np
from PIL import Image

UPSAMPLE = 1


def _model(name: str) -> str:
    return str(importlib.resources.files("face_recognition_models").joinpath("models", name))


class DlibPipeline:
    def __init__(self):
        self.detector = dlib.get_frontal_face_detector()
        self.shapes = dlib.shape_predictor(_model("shape_predictor_5_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(_model("dlib_face_recognition_resnet_model_v1.dat"))

    @staticmethod
    def load(path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("RGB"))

    def detect(self, rgb: np.ndarray):
        return list(self.detector(rgb, UPSAMPLE))

    def embed(self, rgb: np.ndarray, boxes) -> list[np.ndarray]:
        return [np.asarray(self.encoder.compute_face_descriptor(rgb, self.shapes(rgb, box), 1)) for box in boxes]

    def analyze(self, path) -> list[np.ndarray]:
        rgb = self.load(path)
        return self.embed(rgb, self.detect(rgb))


_worker: DlibPipeline | None = None


def count_faces_in_process(path) -> int:
    """Worker-process entry point: the whole pipeline on one image, returns its face count."""
    global _worker
    if _worker is None:
        _worker = DlibPipeline()
    return len(_worker.analyze(path))
