"""YuNet face detection: pre-processing, anchor-free decoding and NMS in numpy.

YuNet predicts, on three feature maps (strides 8, 16, 32), a class score, an objectness score, a box
(centre offset and log size) and five landmarks per grid cell. Images are resized so that their
longer side is at most ``max_side`` (never enlarged), padded bottom-right to a multiple of 32 (to a
common size for a batch), and detections are mapped back to the original pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import time

import cv2
import numpy as np

from facecore.backends import BackendOptions, InferenceModel
from facecore.images import full_size, reduction_of
from facecore.models import YUNET, ModelSpec, open_registry_model

STRIDES = (8, 16, 32)
PAD_MULTIPLE = 32
DEFAULT_MAX_SIDE = 640
NMS_IOU = 0.3


@dataclass
class Detection:
    """One detected face in original image coordinates.

    ``box`` is ``(x1, y1, x2, y2)`` in pixels; ``landmarks`` is ``(5, 2)``: right eye, left eye (of
    the person: image left first), nose tip, right and left mouth corner; ``score`` is in [0, 1].
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` box against ``(N, 4)`` boxes, all ``(x1, y1, x2, y2)``."""
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_outputs(outputs: dict[str, np.ndarray], index: int, pad_h: int, pad_w: int,
                   threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image of a batch into ``(boxes (N,4), scores (N,), landmarks (N,5,2))``."""
    all_boxes, all_scores, all_kps = [], [], []
    for stride in STRIDES:
        cols = pad_w // stride
        cls = outputs[f"cls_{stride}"][index, :, 0]
        obj = outputs[f"obj_{stride}"][index, :, 0]
        product = np.clip(cls, 0.0, 1.0) * np.clip(obj, 0.0, 1.0)
        hits = np.nonzero(product >= threshold * threshold)[0]  # the score is the square root: only of hits
        if hits.size == 0:
            continue
        scores = np.sqrt(product[hits])
        ys, xs = np.divmod(hits, cols)
        xs, ys = xs.astype(np.float32), ys.astype(np.float32)
        bbox = outputs[f"bbox_{stride}"][index, hits]
        kps = outputs[f"kps_{stride}"][index, hits].reshape(-1, 5, 2)
        cx = (xs + bbox[:, 0]) * stride
        cy = (ys + bbox[:, 1]) * stride
        w = np.exp(bbox[:, 2]) * stride
        h = np.exp(bbox[:, 3]) * stride
        all_boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
        all_scores.append(scores)
        all_kps.append((kps + np.stack([xs, ys], axis=1)[:, None, :]) * stride)
    if not all_boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
    return np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_kps)


def _padded_size(height: int, width: int) -> tuple[int, int]:
    def up(value: int) -> int:
        return max(PAD_MULTIPLE, -(-value // PAD_MULTIPLE) * PAD_MULTIPLE)

    return up(height), up(width)


class YuNetDetector:
    """Batched YuNet face detector on an inference backend."""

    def __init__(self, model: InferenceModel, spec: ModelSpec = YUNET, max_side: int = DEFAULT_MAX_SIDE):
        self.model = model
        self.spec = spec
        self.max_side = max_side
        self.input_name = model.input_names[0]
        self.output_names = model.output_names

    @classmethod
    def from_registry(cls, options: BackendOptions, max_side: int = DEFAULT_MAX_SIDE) -> "YuNetDetector":
        return cls(open_registry_model(YUNET, options), YUNET, max_side)

    def detect_batch(self, images: list[np.ndarray], threshold: float = 0.5,
                     limit: int = 0, timer=None) -> list[list[Detection]]:
        """Detect faces in several BGR images at once.

        Returns, per image, faces with ``score >= threshold``, largest first, at most ``limit``
        of them when ``limit > 0``, in pixels of the full image (of a
        :class:`~facecore.images.ReducedImage` too). A :class:`~facecore.pipeline.StageTimer` gets the
        time of the resize, the inference and the decoding with NMS as details.
        """
        if not images:
            return []
        started = time.perf_counter()
        layout = BatchLayout.of([image.shape for image in images], self.max_side,
                                reductions=[reduction_of(image) for image in images],
                                full_sizes=[full_size(image) for image in images])
        batch = np.zeros((len(images), layout.pad_h, layout.pad_w, 3), dtype=np.uint8)
        for slot, (image, (h, w)) in enumerate(zip(images, layout.sizes)):
            if (h, w) == image.shape[:2]:
                batch[slot, :h, :w] = image
            else:
                cv2.resize(image, (w, h), dst=batch[slot, :h, :w], interpolation=cv2.INTER_AREA)
        if timer:
            started = timer.detail("resize", started)
        outputs = dict(zip(self.output_names, self.model.run({self.input_name: batch})))
        return layout.detections(outputs, threshold, limit, timer, started)


@dataclass(frozen=True)
class BatchLayout:
    """Where the images of one detector batch go: their scale, resized size and the padded batch size.

    Images are shrunk so that their longer side is at most ``max_side`` (never enlarged) and padded
    bottom-right to a common multiple of 32. Shared by the CPU and the GPU (torch) preprocessing.
    An image decoded at ``1 / reduction`` of its size (:class:`~facecore.images.ReducedImage`) has its
    faces reported in pixels of its full size, ``full_sizes``.
    """

    shapes: tuple[tuple[int, ...], ...]
    scales: tuple[float, ...]
    sizes: tuple[tuple[int, int], ...]
    pad_h: int
    pad_w: int
    reductions: tuple[int, ...]
    full_sizes: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, shapes, max_side: int, reductions=None, full_sizes=None) -> "BatchLayout":
        shapes = tuple(tuple(int(d) for d in shape[:2]) for shape in shapes)
        scales = tuple(min(1.0, max_side / max(shape)) if max_side else 1.0 for shape in shapes)
        sizes = tuple((max(1, round(h * s)), max(1, round(w * s))) for (h, w), s in zip(shapes, scales))
        pad_h, pad_w = _padded_size(max(h for h, _ in sizes), max(w for _, w in sizes))
        reductions = tuple(reductions) if reductions is not None else (1,) * len(shapes)
        full_sizes = tuple(tuple(size) for size in full_sizes) if full_sizes is not None else shapes
        return cls(shapes, scales, sizes, pad_h, pad_w, reductions, full_sizes)

    def detections(self, outputs: dict[str, np.ndarray], threshold: float, limit: int, timer=None,
                   inference_started: float = 0.0) -> list[list[Detection]]:
        """Per image, its faces in full-image coordinates, largest first, at most ``limit`` when > 0.

        With a :class:`~facecore.pipeline.StageTimer`, the time since ``inference_started`` is recorded
        as the detector's inference and this decoding (with NMS) as ``nms``."""
        started = timer.detail("inference", inference_started) if timer else 0.0
        results = []
        for slot, (scale, reduction, full) in enumerate(zip(self.scales, self.reductions, self.full_sizes)):
            boxes, scores, kps = decode_outputs(outputs, slot, self.pad_h, self.pad_w, threshold)
            keep = nms(boxes, scores)
            to_full = reduction / scale  # detector pixels -> pixels of the full image
            faces = [Detection(box=_clip(boxes[i] * to_full, full), score=float(scores[i]),
                               landmarks=kps[i] * to_full) for i in keep]
            faces.sort(key=lambda face: face.area, reverse=True)
            results.append(faces[:limit] if limit > 0 else faces)
        if timer:
            timer.detail("nms", started)
        return results


def _clip(box: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    height, width = size[:2]
    return np.clip(box, [0, 0, 0, 0], [width, height, width, height]).astype(np.float32)
