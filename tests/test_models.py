"""Model registry: the conversion keeps the embeddings, frees the batch dimension, takes uint8 BGR images."""

from __future__ import annotations

import cv2
import numpy as np
import onnx

from facecore.align import align_face
from facecore.backends import BackendOptions
from facecore.embed import ChipEmbedder
from facecore.images import decode_image
from facecore.models import SFACE, YUNET, converted_model_path


def test_converted_graphs_are_clean(models_dir):
    for spec in (YUNET, SFACE):
        graph = onnx.load(str(converted_model_path(spec, models_dir))).graph
        assert not [n for n in graph.node if n.op_type == "DequantizeLinear"]
        consumed = {name for node in graph.node for name in node.input}
        assert all(inp.name in consumed for inp in graph.input)
        assert len(graph.input) == 1
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
        assert graph.input[0].type.tensor_type.shape.dim[3].dim_value == 3  # NHWC, as OpenCV holds images
    original = onnx.load(str(SFACE.source_path())).graph
    assert len(original.input) > 100  # the source declares unused inputs that the conversion drops


def test_conversion_is_cached_by_source_hash(models_dir):
    first = converted_model_path(SFACE, models_dir)
    stamp = first.stat().st_mtime_ns
    second = converted_model_path(SFACE, models_dir)
    assert first == second and second.stat().st_mtime_ns == stamp
    assert SFACE.name in first.name and len(first.stem.split("-")) >= 4


def test_converted_sface_matches_original_graph(data_dir, pipeline, models_dir):
    """The original quantised SFace, run by OpenCV's own FaceRecognizerSF, gives the same vectors as the
    converted graph in float32 (the backends' precisions are compared in test_backends.py)."""
    recognizer = cv2.FaceRecognizerSF.create(str(SFACE.source_path()), "")
    float32 = ChipEmbedder.from_registry(BackendOptions("onnxruntime", "f32", 2, models_dir))
    chips = []
    for path in sorted((data_dir / "lfw-dev").glob("A*/*_0001.jpg"))[:12]:
        image = decode_image(path.read_bytes())
        face = pipeline.detect([image], limit=1)[0][0]
        chips.append(align_face(image, face.landmarks))
    ours = float32.embed(chips)
    reference = np.stack([recognizer.feature(chip).ravel() for chip in chips])
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() >= 0.9999


def test_batch_embedding_equals_single(data_dir, pipeline):
    paths = sorted((data_dir / "lfw-dev").glob("B*/*_0001.jpg"))[:5]
    chips = [f.chip for p in paths for f in pipeline.analyze([p.read_bytes()], limit=1)[0]]
    together = pipeline.embedder.embed(chips)
    alone = np.concatenate([pipeline.embedder.embed([chip]) for chip in chips])
    assert together.shape == (5, 128)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.allclose(together, alone, atol=1e-5)
