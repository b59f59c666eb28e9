"""Which face pipeline a process runs: the torch one on a GPU it was given, the default one otherwise.

A process given a GPU (``PipelineConfig.gpu``: an embedder replica or a bulk-job actor with a GPU
fraction) runs :class:`~facecore.torch_pipeline.TorchFacePipeline` on CUDA, preprocessing included,
when its backend is ``auto`` or ``torch`` and torch sees a GPU; every other process runs the
default :class:`FacePipeline` on the backend its config names (:mod:`facecore.backends`, where
``torch`` is one backend among others). Precision ``auto`` under torch on CUDA is ``fp16``.
Deciding imports torch only where a GPU was given or the backend is ``torch``.
"""

from __future__ import annotations

import dataclasses
import logging

from facecore.backends import BackendUnavailable
from facecore.embed import DEFAULT_EMBEDDING_MODEL
from facecore.pipeline import FacePipeline, PipelineConfig

log = logging.getLogger(__name__)


def gpu_pipeline_precision(backend: str, precision: str, gpu: bool, torch_cuda: bool) -> str | None:
    """The precision of the torch GPU pipeline for this process, or None when it runs the default
    pipeline. ``torch_cuda``: torch sees a CUDA device."""
    if not gpu or backend not in ("auto", "torch"):
        return None
    if not torch_cuda:
        if backend == "torch":
            raise BackendUnavailable("FACES_BACKEND=torch on a process given a GPU, but torch sees no CUDA "
                                     "device (install the gpu extra: pip install 'rayfaces[gpu]')")
        return None
    return "fp16" if precision == "auto" else precision


def open_pipeline(config: PipelineConfig) -> FacePipeline:
    """The pipeline :func:`gpu_pipeline_precision` decides for ``config``."""
    torch_cuda = False
    if config.gpu:
        from facecore.backends.torch_cuda import cuda_available

        torch_cuda = cuda_available()
        if not torch_cuda and config.backend == "auto":
            log.warning("this process was given a GPU, but torch is missing or sees no CUDA device: the face "
                        "pipeline preprocesses on the CPU")
    precision = gpu_pipeline_precision(config.backend, config.precision, config.gpu, torch_cuda)
    if precision is None or config.model != DEFAULT_EMBEDDING_MODEL:  # the GPU preprocessing is SFace's
        return FacePipeline(config)
    from facecore.torch_pipeline import TorchFacePipeline

    log.info("face pipeline on torch: CUDA at %s, preprocessing on the GPU", precision)
    return TorchFacePipeline(dataclasses.replace(config, backend="torch", precision=precision), "cuda", precision)
