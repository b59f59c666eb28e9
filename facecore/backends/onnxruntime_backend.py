"""ONNX Runtime backends: ``onnxruntime`` (CPU provider) and ``onnxruntime-cuda`` (CUDA provider).

Both run float32 only. On the CPU, idle worker threads do not spin: the detector and the embedder
alternate on the same cores, and spinning workers of one would starve the other.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facecore.backends import (BackendOptions, BackendUnavailable, Description, UnsupportedPrecision,
                               register_backend)
from facecore.errors import ModelError

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable("the onnxruntime backend needs the Python package 'onnxruntime' "
                                 "(or 'onnxruntime-gpu' for CUDA): pip install onnxruntime") from exc
    return onnxruntime


def cuda_visible() -> bool:
    """ONNX Runtime has its CUDA provider and this machine shows an NVIDIA GPU to this process."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if not Path("/dev/nvidiactl").exists() and os.name != "nt":
        return False
    try:
        return CUDA_PROVIDER in _onnxruntime().get_available_providers()
    except BackendUnavailable:
        return False


def onnxruntime_installed() -> bool:
    try:
        _onnxruntime()
    except BackendUnavailable:
        return False
    return True


class OnnxRuntimeModel:
    """An ONNX Runtime inference session behind the backend interface."""

    def __init__(self, session, description: Description):
        self.session = session
        self.description = description
        self.input_names = [node.name for node in session.get_inputs()]
        self.output_names = [node.name for node in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feeds)


def _session(path: Path, options: BackendOptions, providers: list):
    ort = _onnxruntime()
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if options.threads:
        session_options.intra_op_num_threads = options.threads
        session_options.inter_op_num_threads = 1
    session_options.log_severity_level = 3
    session_options.add_session_config_entry("session.set_denormal_as_zero", "1")
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=session_options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"cannot load model {path}: {exc}") from exc


def _f32_only(backend: str, precision: str) -> None:
    if precision not in ("auto", "f32"):
        raise UnsupportedPrecision(f"the {backend} backend runs f32 only, not {precision}; "
                                   "use FACES_PRECISION=f32 (or auto), or FACES_BACKEND=openvino for bf16")


def open_cpu(path: Path, options: BackendOptions) -> OnnxRuntimeModel:
    _f32_only("onnxruntime", options.precision)
    session = _session(path, options, [CPU_PROVIDER])
    return OnnxRuntimeModel(session, Description("onnxruntime", "CPU", "f32"))


def open_cuda(path: Path, options: BackendOptions) -> OnnxRuntimeModel:
    _f32_only("onnxruntime-cuda", options.precision)
    if not cuda_visible():
        raise BackendUnavailable("the onnxruntime-cuda backend needs 'onnxruntime-gpu' (the gpu extra) and a "
                                 "visible NVIDIA GPU")
    session = _session(path, options, [CUDA_PROVIDER, CPU_PROVIDER])
    if session.get_providers()[0] != CUDA_PROVIDER:
        raise BackendUnavailable(f"ONNX Runtime could not start its CUDA provider for {path.name}")
    device_id = session.get_provider_options().get(CUDA_PROVIDER, {}).get("device_id", "0")
    return OnnxRuntimeModel(session, Description("onnxruntime", f"CUDA:{device_id}", "f32"))


register_backend("onnxruntime-cuda", open_cuda, available=cuda_visible, gpu=True)
register_backend("onnxruntime", open_cpu, available=onnxruntime_installed)
