"""Inference backends: one small interface over OpenVINO, ONNX Runtime (CPU and CUDA) and others.

A backend opens a runtime-ready ONNX graph (see :mod:`facecore.models`) for a precision and runs it:

    >>> from facecore.backends import BackendOptions, open_model
    >>> model = open_model(path, BackendOptions(backend="auto", precision="auto", threads=2))
    >>> model.description            # Description(backend='openvino', device='CPU', precision='bf16')
    >>> outputs = model.run({model.input_names[0]: blob})   # list of arrays, in output_names order

The interface (:class:`InferenceModel`) every backend implements:

- ``input_names: list[str]`` and ``output_names: list[str]``: the graph's inputs and outputs;
- ``run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]``: one synchronous inference, feeds
  float32 NCHW arrays of any batch size (and, for detectors, any spatial size), outputs float32 in
  ``output_names`` order;
- ``description: Description``: ``backend`` (its registry name), ``device`` (``CPU``, ``CUDA:0``...)
  and ``precision`` actually used (``f32``, ``bf16``, ``fp16``).

A backend is registered by name with one call, made at import of its module:

    register_backend("torch", open_torch_model, available=torch_cuda_visible)

``open_torch_model(path: Path, options: BackendOptions) -> InferenceModel`` imports its packages
inside the call and raises :class:`BackendUnavailable` (naming the missing package) or
:class:`UnsupportedPrecision`; ``available()`` says, cheaply and without raising, whether the
backend can run here (it is what ``auto`` asks). The modules of this package are imported on the
first look-up, so a module dropped in here registers itself; a module elsewhere registers by
calling :func:`register_backend` before the pipeline is built. ``auto`` picks, in order: the first
available GPU backend (``onnxruntime`` when its CUDA provider is present), ``openvino`` on x86 CPUs,
``onnxruntime`` on the CPU otherwise (:func:`resolve_backend`).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from facecore.errors import ModelError

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "openvino", "onnxruntime")
PRECISION_CHOICES = ("auto", "f32", "bf16", "fp16")


class BackendUnavailable(ModelError):
    """The chosen backend cannot run here: its package is not installed, or its device is absent."""


class UnsupportedPrecision(ModelError):
    """The chosen backend (on this machine) does not support the chosen precision."""


@dataclass(frozen=True)
class Description:
    """What runs a model: backend name, device, precision in use."""

    backend: str
    device: str
    precision: str

    def __str__(self) -> str:
        return f"{self.backend}/{self.device}/{self.precision}"


@dataclass(frozen=True)
class BackendOptions:
    """How to open a model.

    ``backend``: a registered name or ``auto``; ``precision``: ``auto`` (the fastest the device runs
    without losing accuracy: bf16 on CPUs with bf16 units under OpenVINO, f32 otherwise), ``f32``,
    ``bf16`` or ``fp16``; ``threads``: intra-op threads (None: the backend's default);
    ``cache_dir``: where a backend may keep compiled models (OpenVINO's model cache);
    ``batch``: the batch size most runs will have, a hint a backend may compile a static variant for.
    """

    backend: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    cache_dir: Path | None = None
    batch: int | None = None


class InferenceModel(Protocol):
    """A model graph opened by a backend (see the module docstring)."""

    input_names: list[str]
    output_names: list[str]
    description: Description

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


Opener = Callable[[Path, BackendOptions], InferenceModel]


@dataclass(frozen=True)
class _Entry:
    open: Opener
    available: Callable[[], bool]
    gpu: bool


_REGISTRY: dict[str, _Entry] = {}
_IMPORT_FAILURES: dict[str, str] = {}
_discovered = False


def register_backend(name: str, opener: Opener, available: Callable[[], bool] = lambda: True,
                     gpu: bool = False) -> None:
    """Make backend ``name`` selectable (``FACES_BACKEND=name``); ``gpu`` backends come first in ``auto``."""
    _REGISTRY[name] = _Entry(opener, available, gpu)


def _discover() -> None:
    """Import this package's modules once, so that each registers its backend."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in pkgutil.iter_modules(__path__):
        try:
            importlib.import_module(f"{__name__}.{module.name}")
        except Exception as exc:  # a backend module whose package is missing must not break the others
            _IMPORT_FAILURES[module.name] = f"{type(exc).__name__}: {exc}"
            log.debug("backend module %s not loaded: %s", module.name, exc)


def backend_names() -> list[str]:
    """Registered backends, in registration order."""
    _discover()
    return list(_REGISTRY)


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def resolve_backend(name: str = "auto") -> str:
    """The backend ``name`` stands for: itself when registered, else ``auto``'s choice."""
    _discover()
    if name != "auto":
        if name not in _REGISTRY:
            failures = "; ".join(f"{module}: {error}" for module, error in _IMPORT_FAILURES.items())
            raise BackendUnavailable(f"unknown inference backend {name!r}; known: {', '.join(_REGISTRY)}"
                                     + (f" (not loaded: {failures})" if failures else ""))
        return name
    for backend, entry in _REGISTRY.items():
        if entry.gpu and entry.available():
            return backend
    cpu_order = ("openvino", "onnxruntime") if is_x86() else ("onnxruntime", "openvino")
    for backend in cpu_order:
        if backend in _REGISTRY and _REGISTRY[backend].available():
            return backend
    raise BackendUnavailable("no inference backend is installed: install openvino or onnxruntime")


def open_model(path: Path | str, options: BackendOptions = BackendOptions()) -> InferenceModel:
    """Open the ONNX graph at ``path`` with the backend and precision of ``options``."""
    name = resolve_backend(options.backend)
    model = _REGISTRY[name].open(Path(path), options)
    log.info("opened %s with %s", Path(path).name, model.description)
    return model


__all__ = [
    "BACKEND_CHOICES", "BackendOptions", "BackendUnavailable", "Description", "InferenceModel",
    "PRECISION_CHOICES", "UnsupportedPrecision", "backend_names", "open_model", "register_backend",
    "resolve_backend",
]
