"""The ``torch`` backend: the converted ONNX graphs run by PyTorch, on CUDA (or on the CPU in tests).

ONNX Runtime's CUDA build is large and not always installable beside a given CUDA; PyTorch usually
is there on GPU nodes. :func:`to_torch` turns a runtime-ready graph (see
:func:`facecore.models.convert_for_runtime`) into a :class:`torch.nn.Module` that replays its nodes
with ``torch.nn.functional``: the ops YuNet and SFace use (Cast, Gather, Conv, BatchNormalization,
Relu, Sigmoid, Add, Sub, Mul, MaxPool, nearest Resize, Transpose, Reshape, Flatten, Gemm, Identity).
A BatchNormalization right after a Conv is folded into the Conv's weights; a Cast to float casts to
the module's precision. Any other op raises :class:`~facecore.errors.ModelError` naming it.

:class:`TorchGraph` has the backends' interface (``run(feeds) -> list of arrays``, ``input_names``,
``output_names``, ``description``) and, for the GPU pipeline, :meth:`TorchGraph.run_tensors`, which
keeps inputs and outputs on the device. Registered as backend ``torch`` (a GPU backend: ``auto``
takes it when torch sees a GPU and ONNX Runtime's CUDA provider is absent); it runs on CUDA when
torch sees a GPU and on the CPU otherwise, at ``fp16`` (``auto`` on CUDA), ``bf16`` or ``f32``
(``auto`` on the CPU). torch is imported inside calls only: it is the ``gpu`` extra's.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from facecore.backends import (BackendOptions, BackendUnavailable, Description, UnsupportedPrecision,
                               register_backend)
from facecore.errors import ModelError

log = logging.getLogger(__name__)

PRECISIONS = {"f32": "float32", "fp16": "float16", "bf16": "bfloat16"}
SUPPORTED_OPS = frozenset({"Cast", "Gather", "Conv", "BatchNormalization", "Relu", "Sigmoid", "Add", "Sub", "Mul", "MaxPool",
                           "Resize", "Transpose", "Reshape", "Flatten", "Gemm", "Identity"})


def _attributes(node: onnx.NodeProto) -> dict:
    return {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}


def _fold_batch_norms(nodes: list[onnx.NodeProto], values: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """Fold each BatchNormalization whose input is a Conv output used by nothing else into that Conv."""
    uses: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    producers = {node.output[0]: node for node in nodes if node.op_type == "Conv"}
    folded, replaced = [], {}
    for node in nodes:
        conv = producers.get(node.input[0]) if node.op_type == "BatchNormalization" else None
        if conv is None or uses.get(node.input[0]) != 1 or not all(name in values for name in node.input[1:5]) \
                or conv.input[1] not in values:
            folded.append(node)
            continue
        gamma, beta, mean, var = (values[name].astype(np.float64) for name in node.input[1:5])
        scale = gamma / np.sqrt(var + _attributes(node).get("epsilon", 1e-5))
        weight = values[conv.input[1]].astype(np.float64)
        bias = values[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else 0.0
        weight_name, bias_name = f"{conv.output[0]}_folded_w", f"{conv.output[0]}_folded_b"
        values[weight_name] = (weight * scale[:, None, None, None]).astype(np.float32)
        values[bias_name] = ((bias - mean) * scale + beta).astype(np.float32)
        replaced[id(conv)] = helper.make_node("Conv", [conv.input[0], weight_name, bias_name], [node.output[0]],
                                              name=conv.name, **_attributes(conv))
        folded.append(None)  # the BN's slot; the Conv is replaced in place below
    return [replaced.get(id(node), node) for node in folded if node is not None]


def to_torch(model: onnx.ModelProto):
    """A :class:`torch.nn.Module` computing ``model`` (a runtime-ready graph): ``forward(*inputs) -> tuple``."""
    import torch
    import torch.nn.functional as F

    graph = model.graph
    unsupported = sorted({node.op_type for node in graph.node} - SUPPORTED_OPS)
    if unsupported:
        raise ModelError(f"the torch backend cannot run ops {', '.join(unsupported)} of graph {graph.name!r}")
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes = _fold_batch_norms(list(graph.node), values)
    used = {name for node in nodes for name in node.input if name in values}
    input_names = [inp.name for inp in graph.input if inp.name not in values]
    output_names = [out.name for out in graph.output]

    def conv(x, w, b, a):
        pads = list(a.get("pads", [0, 0, 0, 0]))
        half = len(pads) // 2
        if pads[:half] != pads[half:]:  # asymmetric: pad explicitly (F.pad takes last dim first)
            x = F.pad(x, [p for i in reversed(range(half)) for p in (pads[i], pads[i + half])])
            pads = [0] * len(pads)
        return F.conv2d(x, w, b, stride=a.get("strides", 1), padding=pads[:half],
                        dilation=a.get("dilations", 1), groups=a.get("group", 1))

    def max_pool(x, a):
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:]:
            raise ModelError("the torch backend cannot run MaxPool with asymmetric padding")
        return F.max_pool2d(x, a["kernel_shape"], a.get("strides", a["kernel_shape"]), pads[:2],
                            ceil_mode=bool(a.get("ceil_mode", 0)))

    def resize(x, roi, scales, sizes, a):
        if a.get("mode", b"nearest") != b"nearest" or a.get("nearest_mode", b"round_prefer_floor") != b"floor" \
                or a.get("coordinate_transformation_mode", b"half_pixel") != b"asymmetric":
            raise ModelError("the torch backend runs only nearest/floor/asymmetric Resize")
        if sizes is not None:
            return F.interpolate(x, size=[int(s) for s in sizes[2:]], mode="nearest")
        return F.interpolate(x, scale_factor=[float(s) for s in scales[2:]], mode="nearest")

    def reshape(x, shape):
        target = [x.shape[i] if int(s) == 0 else int(s) for i, s in enumerate(shape.tolist())]
        return x.reshape(target)

    def gemm(a_, b_, c_, a):
        if a.get("transA", 0):
            a_ = a_.t()
        b_ = b_.t() if a.get("transB", 0) else b_
        out = a.get("alpha", 1.0) * (a_ @ b_)
        return out if c_ is None else out + a.get("beta", 1.0) * c_

    def batch_norm(x, gamma, beta, mean, var, a):
        return F.batch_norm(x, mean, var, gamma, beta, training=False, eps=a.get("epsilon", 1e-5))

    def cast(x, a):
        if a["to"] in FLOAT_TYPES:  # to the module's precision (of its first weight)
            return x.to(module.compute_dtype)
        return x.to(getattr(torch, TENSOR_TYPES[a["to"]]))

    def flatten(x, a):
        axis = a.get("axis", 1)
        return x.reshape(int(np.prod(x.shape[:axis])), -1)

    ops = {
        "Conv": lambda i, a: conv(i[0], i[1], i[2] if len(i) > 2 else None, a),
        "BatchNormalization": lambda i, a: batch_norm(*i[:5], a),
        "Relu": lambda i, a: torch.relu(i[0]),
        "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
        "Add": lambda i, a: i[0] + i[1],
        "Sub": lambda i, a: i[0] - i[1],
        "Mul": lambda i, a: i[0] * i[1],
        "MaxPool": lambda i, a: max_pool(i[0], a),
        "Resize": lambda i, a: resize(i[0], *(list(i[1:]) + [None] * (4 - len(i)))[:3], a),
        "Transpose": lambda i, a: i[0].permute(*a["perm"]),
        "Reshape": lambda i, a: reshape(i[0], i[1]),
        "Flatten": lambda i, a: flatten(i[0], a),
        "Gemm": lambda i, a: gemm(i[0], i[1], i[2] if len(i) > 2 else None, a),
        "Identity": lambda i, a: i[0],
        "Cast": lambda i, a: cast(i[0], a),
        "Gather": lambda i, a: torch.index_select(i[0], a.get("axis", 0), i[1].to(i[0].device)),
    }
    shape_inputs = {node.input[1] for node in nodes if node.op_type == "Reshape"}
    shape_inputs |= {name for node in nodes if node.op_type == "Resize" for name in node.input[1:] if name}
    steps = [(ops[node.op_type], list(node.input), list(node.output), _attributes(node)) for node in nodes]

    class OnnxModule(torch.nn.Module):
        """The graph's nodes replayed in order; weights are buffers, so ``.to(device, dtype)`` moves them."""

        def __init__(self):
            super().__init__()
            self.buffer_of: dict[str, str] = {}
            for index, name in enumerate(sorted(used - shape_inputs)):
                self.register_buffer(f"w{index}", torch.from_numpy(np.array(values[name])))
                self.buffer_of[name] = f"w{index}"
            # shapes and scales stay on the CPU, in their own dtype
            self.shapes = {name: torch.from_numpy(np.array(values[name])) for name in used & shape_inputs}
            self.input_names = input_names
            self.output_names = output_names
            self.compute_dtype = torch.float32

        def _apply(self, fn, *args, **kwargs):  # .to(dtype) and .half() change the precision Casts produce
            super()._apply(fn, *args, **kwargs)
            floats = [b for b in self.buffers() if b.is_floating_point()]
            if floats:
                self.compute_dtype = floats[0].dtype
            return self

        def forward(self, *inputs):
            env = dict(self.shapes)
            env.update((name, getattr(self, buffer)) for name, buffer in self.buffer_of.items())
            env.update(zip(self.input_names, inputs))
            for op, ins, outs, attrs in steps:
                env[outs[0]] = op([env[name] if name else None for name in ins], attrs)
            return tuple(env[name] for name in self.output_names)

    module = OnnxModule().eval()  # `cast` above reads its compute_dtype
    return module


FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
TENSOR_TYPES = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64"}


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device; imports torch only where a GPU may be."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1") or importlib.util.find_spec("torch") is None:
        return False
    if os.name != "nt" and not Path("/dev/nvidiactl").exists():
        return False
    import torch

    return bool(torch.cuda.is_available())


class TorchGraph:
    """A runtime-ready ONNX graph on a torch device, at ``f32``, ``f16`` or ``bf16``.

    ``run`` takes and returns numpy arrays (float32 out); ``run_tensors`` takes tensors (any device
    and float dtype; moved and cast) and returns the outputs on the device in the graph's dtype.
    Calls are serialised: one graph serves one stream of batches.
    """

    backend = "torch"

    def __init__(self, path: Path | str, device: str = "cuda", precision: str = "fp16"):
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable("the torch backend needs the Python package 'torch' "
                                     "(the gpu extra: pip install 'rayfaces[gpu]')") from exc
        if precision not in PRECISIONS:
            raise UnsupportedPrecision(f"the torch backend runs {', '.join(PRECISIONS)}, not {precision!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("the torch backend was asked for CUDA, but torch sees no CUDA device")
        self.device = torch.device(device)
        self.dtype = getattr(torch, PRECISIONS[precision])
        self.precision = precision
        try:
            module = to_torch(onnx.load(str(path)))
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot convert model {path} for torch: {exc}") from exc
        self.input_names = list(module.input_names)
        self.output_names = list(module.output_names)
        self.module = module.to(self.device, self.dtype)
        if self.device.type == "cuda":
            self.module = self.module.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        self._lock = threading.Lock()
        log.info("torch backend: %s on %s at %s", Path(path).name, self.device, precision)

    @property
    def description(self) -> Description:
        index = self.device.index or 0
        device = f"CUDA:{index}" if self.device.type == "cuda" else self.device.type.upper()
        return Description(backend=self.backend, device=device, precision=self.precision)

    def run_tensors(self, feeds: dict):
        """Outputs (device tensors, in the graph's precision) of ``feeds`` (tensors by input name,
        moved to the device; the graphs take uint8 ``(N, H, W, 3)`` BGR images and cast them)."""
        import torch

        inputs = [feeds[name].to(self.device, non_blocking=True) for name in self.input_names]
        with self._lock, torch.inference_mode():
            return list(self.module(*inputs))

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        outputs = self.run_tensors({name: torch.from_numpy(np.ascontiguousarray(feeds[name]))
                                    for name in self.input_names})
        return [out.float().cpu().numpy() for out in outputs]


def open_torch_model(path: Path, options: BackendOptions) -> TorchGraph:
    """The ``torch`` backend's opener: CUDA when torch sees a GPU, else the CPU."""
    if importlib.util.find_spec("torch") is None:
        raise BackendUnavailable("the torch backend needs the Python package 'torch' "
                                 "(the gpu extra: pip install 'rayfaces[gpu]')")
    device = "cuda" if cuda_available() else "cpu"
    precision = options.precision if options.precision != "auto" else ("fp16" if device == "cuda" else "f32")
    return TorchGraph(path, device, precision)


register_backend("torch", open_torch_model, available=cuda_available, gpu=True)
