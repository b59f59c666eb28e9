"""OpenVINO backend (``openvino``) on the CPU: bf16 where the CPU has bf16 units, f32 otherwise.

``auto`` precision asks the CPU device for its ``OPTIMIZATION_CAPABILITIES``: with ``BF16`` listed
(AMX or AVX512-BF16) the model runs with the bf16 inference precision hint (SFace at batch 32 on 2
threads: about 3x faster than f32, per-face cosine to f32 above 0.999), else in f32. The precision is
always set explicitly: OpenVINO's own default on such CPUs is bf16, so ``f32`` must ask for it.

The graph keeps its dynamic dimensions (batch, and a detector's height and width); the CPU plugin
caches its kernels per input shape, so a new batch size or image size costs one slower first run,
not a recompilation. That cache holds :data:`RUNTIME_CACHE_ENTRIES` entries per compiled model
(OpenVINO's default, 5000, let the detector grow by about 2.6 MB with every new padded image size:
+513 MB after 162 sizes; 256 entries held it at +113 MB from the first sizes on, with no slower runs
for the shapes that repeat). With a ``batch`` hint, a second copy reshaped to that batch is compiled for the
runs of exactly that size: static shapes let the plugin plan its memory and kernels once (SFace at
batch 32: about a third less CPU time per face). Compiled models are cached under ``cache_dir``
(OpenVINO's ``CACHE_DIR``).
In bf16 the first two convolutions run on their weights split into bf16 pairs (``hi + lo``, two
convolutions whose outputs are added; :func:`split_first_convolutions`), so their products carry
f32-accurate weights: on SFace, bf16-rounded weights of those two layers (the 3x3 convolution on the
pixels and the depthwise one after it, both at full resolution) put one lfw-dev face at a cosine of
0.9988 to f32, while rounding every layer's activations to bf16, or the later layers' weights, cost
less than 0.0001 (measured layer by layer). With the pairs, every one of the 598 lfw-dev faces is at
0.9994 or more; they add about a tenth to SFace's CPU time per face. (The CPU plugin ignores
per-node precision ``rt_info``; a graph split into an f32 and a bf16 compiled model moves 1.6 MB per
face between them and was slower still.)
Pinning threads to cores is off: several processes (Serve replicas, bulk-job actors) share the
machine's cores. Infer requests are pooled, so one model serves several threads at once.
"""

from __future__ import annotations

import queue
from pathlib import Path

import numpy as np

from facecore.backends import (BackendOptions, BackendUnavailable, Description, UnsupportedPrecision, is_x86,
                               register_backend)
from facecore.errors import ModelError

DEVICE = "CPU"
# Entries of the CPU plugin's cache of shape-specific kernels, per compiled model (see above).
RUNTIME_CACHE_ENTRIES = 256
OV_PRECISIONS = {"f32": "f32", "bf16": "bf16"}
# In bf16, the first convolutions run on their weights as bf16 pairs (see the module docstring).
BF16_PAIRED_CONVOLUTIONS = 2


def _openvino():
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable("the openvino backend needs the Python package 'openvino': "
                                 "pip install openvino") from exc
    return openvino


_core = None


def core():
    """The process's one OpenVINO Core (it owns the CPU plugin and its thread pools)."""
    global _core
    if _core is None:
        _core = _openvino().Core()
    return _core


def openvino_installed() -> bool:
    try:
        _openvino()
    except BackendUnavailable:
        return False
    return True


def cpu_capabilities() -> list[str]:
    """The CPU device's ``OPTIMIZATION_CAPABILITIES`` (``FP32``, ``BF16``, ``INT8``...)."""
    return [str(item).upper() for item in core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")]


def choose_precision(requested: str) -> str:
    """``auto``: bf16 where the CPU has bf16 units, f32 otherwise; a forced precision is checked."""
    bf16 = "BF16" in cpu_capabilities()
    if requested == "auto":
        return "bf16" if bf16 else "f32"
    if requested not in OV_PRECISIONS:
        raise UnsupportedPrecision(f"the openvino backend runs f32 or bf16 on the CPU, not {requested}")
    if requested == "bf16" and not bf16:
        raise UnsupportedPrecision("this CPU has no bf16 units (AMX or AVX512-BF16); use FACES_PRECISION=f32 "
                                   "(or auto)")
    return requested


def bf16_pair(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hi, lo)`` with ``hi`` the weights rounded to the nearest bf16 and ``lo = weights - hi``."""
    bits = np.ascontiguousarray(weights, np.float32).view(np.uint32)
    hi = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)
    return hi, weights.astype(np.float32) - hi


def split_first_convolutions(graph, count: int = BF16_PAIRED_CONVOLUTIONS) -> None:
    """Replace each of the graph's first ``count`` convolutions ``conv(x, w)`` by ``conv(x, hi) +
    conv(x, lo)`` (see :func:`bf16_pair`), in place; weights are constant-folded first (a graph may
    reshape them). Convolutions whose weights are not constant are left as they are."""
    _openvino()
    from openvino import opset13, passes

    folding = passes.Manager()
    folding.register_pass(passes.ConstantFolding())
    folding.run_passes(graph)
    convolutions = [node for node in graph.get_ordered_ops()
                    if node.get_type_name() in ("Convolution", "GroupConvolution")][:count]
    for convolution in convolutions:
        weights = convolution.input(1).get_source_output().get_node()
        if weights.get_type_name() != "Constant":
            continue
        make = opset13.convolution if convolution.get_type_name() == "Convolution" else opset13.group_convolution
        attributes = convolution.get_attributes()
        data = convolution.input(0).get_source_output()
        pair = opset13.add(*[make(data, opset13.constant(part), attributes["strides"], attributes["pads_begin"],
                                   attributes["pads_end"], attributes["dilations"], attributes["auto_pad"])
                             for part in bf16_pair(weights.get_data())])
        pair.set_friendly_name(f"{convolution.get_friendly_name()}/bf16_pair")
        for target in list(convolution.output(0).get_target_inputs()):
            target.replace_source_output(pair.output(0))


class _RequestPool:
    """Infer requests of one compiled model, reused across calls and threads."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.outputs = len(compiled.outputs)
        self._idle: queue.SimpleQueue = queue.SimpleQueue()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            request.infer(feeds, share_inputs=True)
            # copies: the request's output memory is overwritten by its next run
            return [request.get_output_tensor(i).data.copy() for i in range(self.outputs)]
        finally:
            self._idle.put(request)


class OpenVinoModel:
    """A compiled OpenVINO model behind the backend interface, with an optional static-batch twin."""

    def __init__(self, graph, dynamic, description: Description, static=None, batch: int | None = None):
        self.description = description
        # names from the graph as read: a freshly compiled model may name its ports by internal tensors
        self.input_names = [port.any_name for port in graph.inputs]
        self.output_names = [port.any_name for port in graph.outputs]
        self._input_index = {name: index for index, name in enumerate(self.input_names)}
        self._dynamic = _RequestPool(dynamic)
        self._static = _RequestPool(static) if static is not None else None
        self.batch = batch

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        by_index = {self._input_index[name]: value for name, value in feeds.items()}
        if self._static is not None and all(len(value) == self.batch for value in feeds.values()):
            return self._static.run(by_index)
        return self._dynamic.run(by_index)


def open_cpu(path: Path, options: BackendOptions) -> OpenVinoModel:
    precision = choose_precision(options.precision)
    config = {
        "INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
        "CPU_RUNTIME_CACHE_CAPACITY": RUNTIME_CACHE_ENTRIES,
    }
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = int(options.threads)
    if options.cache_dir is not None:
        Path(options.cache_dir).mkdir(parents=True, exist_ok=True)
        config["CACHE_DIR"] = str(options.cache_dir)
    try:
        graph = core().read_model(str(path))
        if precision == "bf16":
            split_first_convolutions(graph)
        dynamic = core().compile_model(graph, DEVICE, config)
        static = None
        if options.batch:
            reshaped = graph.clone()
            reshaped.reshape({index: [options.batch, *port.partial_shape[1:]]
                              for index, port in enumerate(reshaped.inputs)})
            static = core().compile_model(reshaped, DEVICE, config)
    except Exception as exc:  # OpenVINO raises RuntimeError for unreadable or unsupported graphs
        raise ModelError(f"OpenVINO cannot compile model {path}: {exc}") from exc
    return OpenVinoModel(graph, dynamic, Description("openvino", DEVICE, precision), static, options.batch)


register_backend("openvino", open_cpu, available=lambda: is_x86() and openvino_installed())
