"""The GPU path's torch code, on the CPU (and on CUDA where a GPU is visible): the ONNX -> torch
converter against ONNX Runtime, the batched preprocessing against OpenCV, the torch pipeline against
the default one on real faces, the device matrix search against numpy, and which pipeline a process
given a GPU runs. Imports only facecore, the matrix search and torch, so that it runs on a bare GPU
machine (see bench/gpu_device.sh)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from faceindex.matrix_search import NumpyMatrixSearch, TorchMatrixSearch, matrix_search
from facecore.align import ARCFACE_TEMPLATE, align_face, similarity_transform
from facecore.backends.torch_cuda import TorchGraph, to_torch
from facecore.detect import box_iou
from facecore.errors import InvalidImage, ModelError, TooManyPixels, UnsupportedFormat
from facecore.gpu_preprocess import EXIF_ORIENTATION, _gpu_decodable, decode_on_device, warp_chips
from facecore.images import ImageLimits, decode_image
from facecore.backends import BackendOptions, BackendUnavailable, UnsupportedPrecision, open_model
from facecore.models import SFACE, YUNET, converted_model_path
from facecore.pipeline import FacePipeline, PipelineConfig
from facecore.pipelines import gpu_pipeline_precision, open_pipeline
from facecore.torch_pipeline import TorchFacePipeline

CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason="no CUDA device visible")


def _lfw_images(data_dir, count: int) -> list[bytes]:
    files = sorted((data_dir / "lfw-dev").glob("*/*.jpg"))
    return [path.read_bytes() for path in files[:: max(1, len(files) // count)][:count]]


@pytest.fixture(scope="module")
def faces(models_dir, data_dir):
    """Real lfw-dev photos (bytes), their decoded images and their faces by the float32 reference
    pipeline (ONNX Runtime on the CPU, OpenCV preprocessing)."""
    pipeline = FacePipeline(PipelineConfig(threads=2, backend="onnxruntime", precision="f32",
                                           cache_dir=str(models_dir)))
    images = _lfw_images(data_dir, 8) + [(data_dir / "group" / "dlib_bald_guys.jpg").read_bytes()]
    decoded = pipeline.decode(images)
    return images, decoded, pipeline.analyze(images)


# ------------------------------------------------------------------------------- the converter

@pytest.mark.parametrize("spec, shape", [(SFACE, (3, 112, 112, 3)), (YUNET, (2, 160, 224, 3))])
def test_torch_graph_matches_onnxruntime(spec, shape, models_dir):
    path = converted_model_path(spec, models_dir)
    reference = open_model(path, BackendOptions(backend="onnxruntime", threads=2))
    batch = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    expected = reference.run({reference.input_names[0]: batch})
    graph = TorchGraph(path, "cpu", "f32")
    assert graph.input_names == reference.input_names and graph.output_names == reference.output_names
    outputs = graph.run({graph.input_names[0]: batch})
    for got, want in zip(outputs, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    assert graph.description.backend == "torch" and graph.description.precision == "f32"


def test_torch_backend_names_an_op_it_cannot_run():
    node = helper.make_node("Softmax", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    with pytest.raises(ModelError, match="Softmax"):
        to_torch(helper.make_model(graph))


def test_torch_backend_is_registered_and_rejects_unknown_precision(models_dir):
    path = converted_model_path(SFACE, models_dir)
    with pytest.raises(UnsupportedPrecision, match="not 'int4'"):
        TorchGraph(path, "cpu", "int4")
    opened = open_model(path, BackendOptions(backend="torch"))
    assert opened.description.backend == "torch"
    assert opened.description.device == ("CUDA:0" if CUDA else "CPU")
    assert opened.description.precision == ("fp16" if CUDA else "f32")


def test_batch_norm_is_folded_into_convs(models_dir):
    source = onnx.load(str(converted_model_path(SFACE, models_dir)))
    module = to_torch(source)
    convs = sum(node.op_type == "Conv" for node in source.graph.node)
    norms = [node for node in source.graph.node if node.op_type == "BatchNormalization"]
    assert len([name for name in module.buffer_of if name.endswith("_folded_w")]) == convs
    kept = [node for node in norms if node.input[1] in module.buffer_of]
    assert len(kept) == len(norms) - convs == 2  # the two that follow a Relu and the Gemm


# ---------------------------------------------------------------------------- preprocessing

def test_batched_warps_match_opencv(faces):
    _, decoded, found = faces
    owners, matrices, expected = [], [], []
    for index, (image, per_image) in enumerate(zip(decoded, found)):
        for face in per_image:
            owners.append(index)
            matrices.append(similarity_transform(face.landmarks, ARCFACE_TEMPLATE))
            expected.append(align_face(image, face.landmarks))
    # a face whose chip reaches outside the image: the border is black, as with OpenCV
    shifted = similarity_transform(found[0][0].landmarks - 60, ARCFACE_TEMPLATE)
    owners.append(0)
    matrices.append(shifted)
    expected.append(align_face(decoded[0], found[0][0].landmarks - 60))
    assert len({image.shape for image in decoded}) > 1  # images of different sizes in one batch
    chips = warp_chips([torch.from_numpy(image) for image in decoded], owners, np.stack(matrices), 112).numpy()
    diff = np.abs(chips.astype(np.int16) - np.stack(expected).astype(np.int16))
    assert chips.shape == (len(owners), 112, 112, 3)
    assert diff.mean() < 0.2
    assert np.percentile(diff, 99.9) <= 2
    assert diff.max() <= 8


def _reencoded(jpeg: bytes, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_decode_on_device_matches_cpu_decoding(faces, lfw_image):
    images, decoded, _ = faces
    for tensor, image in zip(decode_on_device(images, "cpu"), decoded):
        assert tensor.dtype == torch.uint8 and np.array_equal(tensor.numpy(), image)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    rotated = _reencoded(lfw_image, "JPEG", exif=exif.tobytes())
    png = _reencoded(lfw_image, "PNG")
    grey = _reencoded(_reencoded(lfw_image, "JPEG"), "JPEG")
    assert _gpu_decodable(lfw_image, ImageLimits()) and _gpu_decodable(grey, ImageLimits())
    assert not _gpu_decodable(rotated, ImageLimits()) and not _gpu_decodable(png, ImageLimits())
    for data in (rotated, png):
        assert np.array_equal(decode_on_device([data], "cpu")[0].numpy(), decode_image(data))
    with pytest.raises(TooManyPixels):
        _gpu_decodable(lfw_image, ImageLimits(max_pixels=100))


def test_decode_on_device_raises_the_cpu_errors(lfw_image):
    with pytest.raises(InvalidImage, match="empty"):
        decode_on_device([lfw_image, b""], "cpu")
    with pytest.raises(InvalidImage, match="truncated"):
        decode_on_device([lfw_image[:3000]], "cpu")
    with pytest.raises(UnsupportedFormat):
        decode_on_device([b"P6\n2 2\n255\n" + bytes(12)], "cpu")  # PPM


# --------------------------------------------------------------------------------- pipeline

def _assert_same_faces(reference, candidate, pixels: float, min_cosine: float, min_faces: int):
    """Same faces: boxes and landmarks within ``pixels`` (plus 2% of the face's width for images the
    detector saw shrunk), quality within 0.02, embeddings at cosine >= ``min_cosine``."""
    assert [len(per_image) for per_image in candidate] == [len(per_image) for per_image in reference]
    cosines = []
    for ref_faces, faces in zip(reference, candidate):
        boxes = np.stack([face.box for face in faces]) if faces else np.zeros((0, 4))
        for ref in ref_faces:  # faces come largest first: near-equal sizes may swap places
            face = faces[int(np.argmax(box_iou(ref.box, boxes)))]
            tolerance = pixels + 0.02 * (ref.box[2] - ref.box[0])
            assert np.abs(face.box - ref.box).max() < tolerance
            assert np.abs(face.landmarks - ref.landmarks).max() < tolerance
            assert abs(face.quality.score - ref.quality.score) < 0.02
            cosines.append(float(face.embedding @ ref.embedding))
    assert len(cosines) >= min_faces
    assert min(cosines) >= min_cosine, sorted(cosines)[:3]


def _assert_matches_default(reference, candidate):
    """lfw-dev faces (250 px, not resized for the detector): cosine >= 0.999; the shrunk collage:
    the same faces, cosine >= 0.99 (torch's area resize is not bit-identical to OpenCV's)."""
    _assert_same_faces(reference[:-1], candidate[:-1], 0.1, 0.999, 8)
    _assert_same_faces(reference[-1:], candidate[-1:], 1.0, 0.99, 20)


def test_torch_pipeline_on_cpu_matches_the_default_pipeline(faces, models_dir):
    images, _, reference = faces
    pipeline = TorchFacePipeline(PipelineConfig(cache_dir=str(models_dir)), "cpu", "f32")
    _assert_matches_default(reference, pipeline.analyze(images))
    chips = np.stack([face.chip for face in reference[0]])
    vectors = pipeline.embedder.embed(chips)
    assert vectors.shape == (len(chips), 128)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)



def test_torch_pipeline_embeds_another_model_on_the_host(data_dir, models_dir, pipeline):
    """A service of another model than SFace on a GPU replica: the torch pipeline cuts that model's
    chips on the host and runs it on the default backend; the same fusion embedding as the default
    pipeline's, and the same context crop."""
    image = (data_dir / "lfw-dev" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg").read_bytes()
    found = []
    for candidate in (TorchFacePipeline(PipelineConfig(cache_dir=str(models_dir)), "cpu", "f32"), pipeline):
        decoded = candidate.decode([image])
        faces = candidate.detect_decoded(decoded, 0.8, 1, None)
        candidate.describe(decoded, faces, quality=False, model="fusion")
        found.append((faces[0][0].embedding, candidate.context_crops(decoded[0], faces[0])))
    (torch_vector, torch_crop), (vector, crop) = found
    assert torch_vector.shape == (256,) and float(torch_vector @ vector) >= 0.999
    assert torch_crop.shape == crop.shape == (1, 288, 288, 3)

@needs_gpu
@pytest.mark.parametrize("precision", ["fp16", "f32"])
def test_torch_pipeline_on_cuda_matches_the_default_pipeline(faces, models_dir, precision):
    images, decoded, reference = faces
    pipeline = TorchFacePipeline(PipelineConfig(cache_dir=str(models_dir)), "cuda", precision)
    _assert_matches_default(reference, pipeline.analyze(decoded))  # same pixels in: the GPU stages alone
    on_device = pipeline.decode(images)
    assert all(image.device.type == "cuda" for image in on_device)
    for tensor, image in zip(on_device, decoded):  # nvJPEG's IDCT and upsampling are not libjpeg's
        assert np.abs(tensor.cpu().numpy().astype(np.int16) - image).mean() < 2.0
    from_bytes = pipeline.analyze(images)
    _assert_same_faces(reference[:-1], from_bytes[:-1], 1.0, 0.995, 8)


# -------------------------------------------------------------------------- pipeline choice

def test_gpu_pipeline_choice():
    assert gpu_pipeline_precision("auto", "auto", gpu=True, torch_cuda=True) == "fp16"
    assert gpu_pipeline_precision("torch", "f32", gpu=True, torch_cuda=True) == "f32"
    assert gpu_pipeline_precision("auto", "auto", gpu=True, torch_cuda=False) is None
    assert gpu_pipeline_precision("auto", "auto", gpu=False, torch_cuda=True) is None
    assert gpu_pipeline_precision("torch", "auto", gpu=False, torch_cuda=True) is None
    assert gpu_pipeline_precision("onnxruntime-cuda", "auto", gpu=True, torch_cuda=True) is None
    with pytest.raises(BackendUnavailable, match="sees no CUDA device"):
        gpu_pipeline_precision("torch", "auto", gpu=True, torch_cuda=False)


def test_open_pipeline_without_a_gpu_runs_the_default_pipeline_on_the_named_backend(models_dir):
    config = PipelineConfig(cache_dir=str(models_dir), threads=1)
    on_torch = open_pipeline(dataclasses.replace(config, backend="torch"))
    assert type(on_torch) is FacePipeline and on_torch.embedder.description.backend == "torch"
    assert open_pipeline(dataclasses.replace(config, backend="onnxruntime")).embedder.description.backend == \
        "onnxruntime"
    if not CUDA:  # given a GPU that torch does not see: the default pipeline, not a failure
        assert type(open_pipeline(dataclasses.replace(config, backend="onnxruntime", gpu=True))) is FacePipeline
    else:
        gpu = open_pipeline(dataclasses.replace(config, gpu=True))
        assert isinstance(gpu, TorchFacePipeline) and gpu.embedder.description.device == "CUDA:0"


# ----------------------------------------------------------------------------- matrix search

def _unit(rng, rows: int, dim: int = 128) -> np.ndarray:
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if CUDA else []))
def test_torch_matrix_search_matches_numpy(device):
    rng = np.random.default_rng(3)
    vectors, queries = _unit(rng, 5000), _unit(rng, 9)
    rows, scores = NumpyMatrixSearch().top(queries, vectors, 10)
    exact = TorchMatrixSearch(device, "float32").top(queries, vectors, 10)
    np.testing.assert_array_equal(exact[0], rows)
    np.testing.assert_allclose(exact[1], scores, atol=1e-5)
    half = TorchMatrixSearch(device)
    found, _ = half.top(queries, vectors, 40)
    assert all(set(want) <= set(row) for row, want in zip(found, rows))  # half precision: among 40
    queries_near = vectors[[5, 77, 4000]] + 0.01 * _unit(rng, 3)
    assert half.top(queries_near, vectors, 1)[0][:, 0].tolist() == [5, 77, 4000]
    assert half.memory_bytes() >= 5000 * 128 * 2


def test_matrix_search_choice():
    assert matrix_search("numpy") is None
    assert isinstance(matrix_search("cpu"), TorchMatrixSearch)


def test_gpu_batches_are_padded_to_a_few_sizes():
    from facecore.backends.torch_cuda import padded_batch

    sizes = {padded_batch(rows) for rows in range(1, 257)}
    assert sizes == {8, 16, 32, 64, 128, 256}
    assert all(padded_batch(rows) >= rows for rows in range(1, 600))
