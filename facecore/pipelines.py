"""Which face pipeline a process runs: the torch one on a GPU it was given, the default one otherwise.

``PipelineConfig.backend``: ``auto`` runs :class:`~facecore.torch_pipeline.TorchFacePipeline` on
CUDA when the process was given a GPU (``PipelineConfig.gpu``: an embedder replica or a bulk-job
actor with a GPU fraction) and torch sees one, and the default :class:`FacePipeline` otherwise;
``torch`` forces the torch pipeline (on CUDA when given a GPU, else on the CPU); any other value is
the default pipeline's. ``precision`` ``auto`` is ``f16`` on CUDA and ``f32`` on the CPU. Deciding
needs no torch import unless a GPU was given or ``torch`` asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from facecore.errors import ModelError
from facecore.pipeline import FacePipeline, PipelineConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineChoice:
    """``torch`` (with its device and precision) or ``default`` (the default pipeline's backends)."""

    kind: str
    device: str = "cpu"
    precision: str = "f32"


def choose_pipeline(backend: str, precision: str, gpu: bool, torch_cuda: bool) -> PipelineChoice:
    """The pipeline for ``backend``/``precision`` in a process given a GPU (``gpu``) or not, where
    torch does (``torch_cuda``) or does not see a CUDA device."""
    if backend == "torch" or (backend == "auto" and gpu and torch_cuda):
        if backend == "torch" and gpu and not torch_cuda:
            raise ModelError("FACES_BACKEND=torch on a GPU replica, but torch sees no CUDA device "
                             "(install the gpu extra: pip install 'rayfaces[gpu]')")
        device = "cuda" if gpu and torch_cuda else "cpu"
        if precision == "auto":
            precision = "f16" if device == "cuda" else "f32"
        return PipelineChoice("torch", device, precision)
    return PipelineChoice("default")


def open_pipeline(config: PipelineConfig) -> FacePipeline:
    """A pipeline as :func:`choose_pipeline` decides for ``config``."""
    torch_cuda = False
    if config.gpu or config.backend == "torch":
        from facecore.backends.torch_cuda import cuda_available

        torch_cuda = cuda_available()
        if config.gpu and not torch_cuda:
            log.warning("this process was given a GPU, but torch is missing or sees no CUDA device: "
                        "the face pipeline runs on the default backends")
    choice = choose_pipeline(config.backend, config.precision, config.gpu, torch_cuda)
    if choice.kind == "default":
        return FacePipeline(config)
    from facecore.torch_pipeline import TorchFacePipeline

    log.info("face pipeline on torch, %s at %s", choice.device, choice.precision)
    return TorchFacePipeline(config, choice.device, choice.precision)
