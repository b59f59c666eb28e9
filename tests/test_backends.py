"""Inference backends: selection, clear errors, and embeddings comparable across backends and precisions."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from facecore.backends import (BackendOptions, BackendUnavailable, UnsupportedPrecision, is_x86, open_model,
                               resolve_backend)
from facecore.backends import onnxruntime_backend, openvino_backend
from facecore.embed import ChipEmbedder
from facecore.errors import ModelError
from facecore.models import SFACE, converted_model_path
from facecore.pipeline import FacePipeline, PipelineConfig


def cpu_backends() -> list[tuple[str, str]]:
    """Every (backend, precision) that runs on this machine's CPU."""
    pairs = [("onnxruntime", "f32"), ("openvino", "f32")]
    if "BF16" in openvino_backend.cpu_capabilities():
        pairs.append(("openvino", "bf16"))
    return pairs


@pytest.fixture(scope="module")
def lfw_faces(data_dir, pipeline) -> tuple[np.ndarray, np.ndarray]:
    """Aligned chips of every face the pipeline finds in the lfw-dev photos (about 600), and the
    indices of one face per person (the first photo's largest face of each folder)."""
    folders = sorted(folder for folder in (data_dir / "lfw-dev").iterdir() if folder.is_dir())
    chips, one_per_person = [], []
    for folder in folders:
        paths = sorted(folder.glob("*.jpg"))
        for index, per_image in enumerate(pipeline.analyze([path.read_bytes() for path in paths], quality=False)):
            if index == 0 and per_image:
                one_per_person.append(len(chips))
            chips.extend(face.chip for face in per_image)
    assert len(chips) >= 550 and len(one_per_person) >= 150
    return np.stack(chips), np.array(one_per_person)


@pytest.fixture(scope="module")
def lfw_chips(lfw_faces) -> np.ndarray:
    return lfw_faces[0]


@pytest.fixture(scope="module")
def reference(lfw_chips, models_dir) -> np.ndarray:
    """ONNX Runtime float32: the reference every backend and precision is compared with."""
    return ChipEmbedder.from_registry(BackendOptions("onnxruntime", "f32", 2, models_dir)).embed(lfw_chips)


def test_auto_picks_the_machines_best_backend(pipeline):
    if onnxruntime_backend.cuda_visible():
        expected = "onnxruntime-cuda"
    else:
        expected = "openvino" if is_x86() else "onnxruntime"
    assert resolve_backend("auto") == expected
    described = pipeline.embedder.description
    assert described.backend == expected.split("-")[0]
    if expected == "openvino":
        has_bf16 = "BF16" in openvino_backend.cpu_capabilities()
        assert (described.device, described.precision) == ("CPU", "bf16" if has_bf16 else "f32")


@pytest.mark.parametrize("backend, precision", [("onnxruntime", "auto"), ("openvino", "f32")])
def test_forced_backend_and_precision(models_dir, backend, precision):
    pipeline = FacePipeline(PipelineConfig(threads=1, backend=backend, precision=precision,
                                           cache_dir=str(models_dir)))
    assert pipeline.embedder.description.backend == backend
    assert pipeline.embedder.description.precision == "f32"
    assert pipeline.detector.model.description.backend == backend


def test_unknown_backend_names_the_known_ones(models_dir):
    with pytest.raises(BackendUnavailable, match="unknown inference backend 'tensorrt'.*openvino"):
        open_model(converted_model_path(SFACE, models_dir), BackendOptions("tensorrt"))


def test_missing_package_is_named(models_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails as if not installed
    monkeypatch.setattr(openvino_backend, "_core", None)
    with pytest.raises(BackendUnavailable, match="needs the Python package 'openvino'") as raised:
        FacePipeline(PipelineConfig(backend="openvino", cache_dir=str(models_dir)))
    assert isinstance(raised.value, ModelError)


@pytest.mark.parametrize("backend, precision", [("onnxruntime", "bf16"), ("openvino", "fp16")])
def test_unsupported_precision_is_named(models_dir, backend, precision):
    with pytest.raises(UnsupportedPrecision, match=precision) as raised:
        open_model(converted_model_path(SFACE, models_dir), BackendOptions(backend, precision))
    assert isinstance(raised.value, ModelError)


def test_cuda_backend_runs_on_the_gpu_or_says_what_it_needs(models_dir):
    path = converted_model_path(SFACE, models_dir)
    if onnxruntime_backend.cuda_visible():
        assert open_model(path, BackendOptions("onnxruntime-cuda")).description.device.startswith("CUDA")
        return
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        open_model(path, BackendOptions("onnxruntime-cuda"))


@pytest.mark.parametrize("backend, precision", cpu_backends())
def test_every_backend_embeds_like_the_float32_reference(lfw_faces, reference, models_dir, backend, precision):
    """Every lfw-dev face, each at cosine >= 0.999 to its float32 embedding (bf16 on a CPU without
    AMX once put one face at 0.9988: the first two convolutions' bf16 weights)."""
    chips, one_per_person = lfw_faces
    embedder = ChipEmbedder.from_registry(BackendOptions(backend, precision, 2, models_dir), batch_size=32)
    assert embedder.description.precision == precision
    vectors = embedder.embed(chips)  # full batches of 32 and a smaller last one
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() >= 0.999, (backend, precision, cosines.min(), int(cosines.argmin()))
    # faces of different people stay apart: the nearest other person is far below the same face's cosine
    people = vectors[one_per_person] @ reference[one_per_person].T - np.eye(len(one_per_person)) * 2
    assert people.max() < 0.9


def test_static_and_dynamic_batches_agree(lfw_chips, models_dir):
    embedder = ChipEmbedder.from_registry(BackendOptions("openvino", "auto", 2, models_dir), batch_size=8)
    whole = embedder.embed(lfw_chips[:8])
    parts = np.concatenate([embedder.embed(lfw_chips[:5]), embedder.embed(lfw_chips[5:8])])
    assert ((whole * parts).sum(axis=1)).min() >= 0.999


def test_openvino_memory_stays_bounded_as_image_sizes_vary(models_dir):
    """Every new padded image size made OpenVINO's CPU plugin cache more kernels (about 2.6 MB a
    size with its default capacity): a detector serving images of many sizes grew without end."""
    import psutil

    pipeline = FacePipeline(PipelineConfig(backend="openvino", precision="f32", threads=1, cache_dir=str(models_dir)))
    rng = np.random.default_rng(0)
    process = psutil.Process()

    def new_sizes(widths: tuple[int, ...]) -> None:
        for height in range(64, 640, 64):
            for width in widths:
                pipeline.detect_decoded([rng.integers(0, 255, (height, width, 3), dtype=np.uint8)], 0.8, 0, None)

    new_sizes((96, 608))  # the largest buffers, and the cache filled once
    before = process.memory_info().rss
    new_sizes((192, 352, 480))  # 27 sizes not seen yet
    grown_mb = (process.memory_info().rss - before) / 2**20
    assert grown_mb < 25, f"the detector grew by {grown_mb:.0f} MB over 27 new image sizes"
