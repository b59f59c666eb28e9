"""The face pipeline on a torch device: models on the ``torch`` backend, preprocessing batched there.

:class:`TorchFacePipeline` is a :class:`~facecore.pipeline.FacePipeline` (same methods, same
results within float tolerance) whose images stay on the device from decoding to embedding: JPEGs
decoded by nvJPEG, the detector input resized and padded there, the five-point warps of all faces
done in one batched gather, chips fed to the embedder without leaving the device. Only the
detector's raw outputs (for the numpy decoding and NMS), the chips (for quality and crops) and
the embeddings come back to the host. On the CPU (tests) the same torch code runs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

import numpy as np

from facecore.align import ARCFACE_TEMPLATE, CHIP_SIZE, similarity_transforms
from facecore.backends.torch_cuda import TorchGraph
from facecore.detect import YUNET, BatchLayout, Detection
from facecore.embed import AlignedFaces, ChipEmbedder, l2_normalize
from facecore.gpu_preprocess import as_device_image, decode_on_device, detector_batch, warp_chips
from facecore.models import SFACE, ModelSpec, converted_model_path
from facecore.pipeline import Face, FacePipeline, ImageInput, PipelineConfig, StageTimer
from facecore.quality import assess_quality

log = logging.getLogger(__name__)

GPU_DETECT_BATCH = 64
GPU_EMBED_BATCH = 256


class TorchDetector:
    """YuNet on a :class:`TorchGraph`; takes numpy images or device tensors (``(H, W, 3)`` BGR)."""

    def __init__(self, graph: TorchGraph, spec: ModelSpec = YUNET, max_side: int = 640):
        self.graph = graph
        self.spec = spec
        self.max_side = max_side

    def detect_batch(self, images: list, threshold: float = 0.5, limit: int = 0,
                     timer: StageTimer | None = None) -> list[list[Detection]]:
        if not images:
            return []
        started = time.perf_counter()
        device_images = [as_device_image(image, self.graph.device) for image in images]
        layout = BatchLayout.of([image.shape for image in device_images], self.max_side)
        batch = detector_batch(device_images, layout)
        if timer:
            started = timer.detail("resize", started)
        outputs = self.graph.run_tensors({self.graph.input_names[0]: batch})
        arrays = {name: out.float().cpu().numpy() for name, out in zip(self.graph.output_names, outputs)}
        return layout.detections(arrays, threshold, limit, timer, started)


class TorchEmbedder(ChipEmbedder):
    """SFace on a :class:`TorchGraph`: numpy chips as :class:`ChipEmbedder`, or device chips."""

    def __init__(self, graph: TorchGraph, spec: ModelSpec = SFACE, batch_size: int = 256):
        super().__init__(graph, spec, batch_size)
        self.graph = graph

    def embed(self, chips) -> np.ndarray:
        """Embed ``(N, 112, 112, 3)`` BGR uint8 chips (numpy or device tensor); ``(N, D)`` unit float32."""
        if len(chips) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if isinstance(chips, np.ndarray) and chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"chips must be (N, {CHIP_SIZE}, {CHIP_SIZE}, 3), got {chips.shape}")
        import torch

        stack = as_device_image(np.asarray(chips) if not hasattr(chips, "device") else chips, self.graph.device)
        outputs = [self.graph.run_tensors({self.input_name: stack[start:start + self.batch_size]})[0].float()
                   for start in range(0, len(stack), self.batch_size)]

        vectors = torch.cat(outputs).reshape(len(stack), -1)
        return l2_normalize(vectors.cpu().numpy())


class TorchFacePipeline(FacePipeline):
    """Decode -> detect -> align -> embed with every image operation batched on ``device``."""

    def __init__(self, config: PipelineConfig | None = None, device: str = "cuda", precision: str = "fp16"):
        cfg = config or PipelineConfig()
        if device.startswith("cuda"):  # the CPU-tuned batch sizes would leave a GPU mostly idle
            cfg = dataclasses.replace(cfg, detect_batch=max(cfg.detect_batch, GPU_DETECT_BATCH),
                                      embed_batch=max(cfg.embed_batch, GPU_EMBED_BATCH))
        self.config = cfg
        # The detector stays in float32: its landmarks place the chips, and it is a small share of the
        # time (0.29 ms per image at float32 against 0.26 at fp16 on an H100); fp16 pays in the embedder.
        detector = TorchGraph(converted_model_path(YUNET, cfg.cache_dir), device, "f32")
        embedder = TorchGraph(converted_model_path(SFACE, cfg.cache_dir), device, precision)
        self.device = detector.device
        self.detector = TorchDetector(detector, YUNET, cfg.max_side)
        self.embedder = TorchEmbedder(embedder, SFACE, cfg.embed_batch)
        self._embedders = {SFACE.name: self.embedder}
        # other embedding models: the default backend choice (ONNX Runtime's CUDA where installed), as the
        # torch backend runs SFace's and YuNet's operators only
        self.model_options = dataclasses.replace(cfg, backend="auto", precision="auto").backend_options()

    def decode(self, images: Sequence[ImageInput], timer: StageTimer | None = None) -> list:
        """Bytes decoded onto the device (nvJPEG where possible); arrays and tensors pass through."""
        started = time.perf_counter()
        encoded = [i for i, image in enumerate(images) if not hasattr(image, "shape")]
        decoded = list(images)
        if encoded:
            for i, tensor in zip(encoded, decode_on_device([images[i] for i in encoded], self.device,
                                                           self.config.limits)):
                decoded[i] = tensor
        if timer:
            timer.add("decode", started)
        return decoded

    def context_crops(self, image, faces: list[Face]) -> np.ndarray:
        """:meth:`FacePipeline.context_crops`, cut on the host from an image copied back from the device."""
        return super().context_crops(image.cpu().numpy() if hasattr(image, "cpu") else image, faces)

    def describe(self, decoded: list, faces: list[list[Face]], timer: StageTimer | None = None,
                 quality: bool | Sequence[bool] = True, model: str | None = None) -> None:
        """Chips of all faces warped in one batch on the device, embedded there; quality (where asked,
        one flag or one per image) on the host. Another embedding ``model`` than SFace aligns its
        own chips on the host, from the images copied back (the device preprocessing is SFace's)."""
        started = time.perf_counter()
        flat = [(index, face) for index, per_image in enumerate(faces) for face in per_image]
        if not flat:
            return
        images = [as_device_image(image, self.device) for image in decoded]
        matrices = similarity_transforms(np.stack([face.landmarks for _, face in flat]), ARCFACE_TEMPLATE)
        chips = warp_chips(images, [index for index, _ in flat], matrices, CHIP_SIZE)
        host_chips = chips.cpu().numpy()
        wanted = [quality] * len(faces) if isinstance(quality, bool) else list(quality)
        for (index, face), chip in zip(flat, host_chips):
            face.chip = chip
            if wanted[index]:
                face.quality = assess_quality(face.score, face.box[2] - face.box[0], face.box[3] - face.box[1],
                                              chip, face.pose)
        if timer:
            timer.add("align", started)
        started = time.perf_counter()
        embedder = self.embedder_for(model)
        if embedder is self.embedder:
            vectors = self.embedder.embed(chips)
        else:
            landmarks = [np.stack([face.landmarks for face in per_image]) if per_image else np.zeros((0, 5, 2))
                         for per_image in faces]
            boxes = [np.stack([face.box[:4] for face in per_image]) if per_image else np.zeros((0, 4))
                     for per_image in faces]
            vectors = embedder.embed_aligned(
                AlignedFaces([image.cpu().numpy() for image in images], landmarks, host_chips, boxes))
        for (_, face), vector in zip(flat, vectors):
            face.embedding = vector
        if timer:
            timer.add("embed", started)
