"""Warm-up: a pipeline's models run once at every input shape its process will give them, at its start.

The inference backends prepare kernels per input shape the first time it appears (OpenVINO's CPU
plugin compiles and caches them: see :mod:`facecore.backends.openvino_backend`), so without a warm-up
a serving process's memory steps up and its latency spikes the first time each batch size arrives,
for hours after its start as rarer sizes turn up. A warm-up runs zeros through

- the embedder at every batch size it can be given, 1 to its ``batch_size`` (a pipeline embeds its
  faces in chunks of that size, so the last chunk of a run can be any size up to it);
- the detector at every batch size up to the images a process detects at once, at the padded input
  size of each typical photo (:data:`TYPICAL_PHOTO_SIZES`, shrunk to the detector's longer side as
  the pipeline does). Images of other sizes (smaller than the detector's side, unusual aspect ratios)
  still meet a new shape the first time; the plugin's bounded shape cache keeps what they add bounded.

Largest inputs first: OpenVINO's memory for a model's intermediate results follows the largest input
it has run, and growing it one batch size at a time leaves the freed smaller blocks behind (SFace
under bf16, sizes 1 to 32 in rising order: +400 to +680 MB of RSS; 32 first, then the others: +240 MB).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from facecore.detect import BatchLayout, YuNetDetector
from facecore.embed import ChipEmbedder

log = logging.getLogger(__name__)

# (height, width) of photos as cameras and phones take them (4:3, 3:2, 1:1, both ways) and of video
# frames (16:9, both ways): larger than the detector's side, so each becomes one padded detector size.
TYPICAL_PHOTO_SIZES = ((3000, 4000), (4000, 3000), (4000, 6000), (6000, 4000), (3000, 3000), (1080, 1920),
                       (1920, 1080))


def typical_detector_sizes(max_side: int) -> list[tuple[int, int]]:
    """The padded ``(height, width)`` detector inputs of :data:`TYPICAL_PHOTO_SIZES` at ``max_side``,
    largest first."""
    sizes = set()
    for shape in TYPICAL_PHOTO_SIZES:
        layout = BatchLayout.of([shape], max_side)
        sizes.add((layout.pad_h, layout.pad_w))
    return sorted(sizes, key=lambda size: (-size[0] * size[1], size))


def warm_up_detector(detector: YuNetDetector, max_images: int) -> None:
    """Detect in ``max_images`` down to 1 blank images at once, at each typical padded size."""
    for height, width in typical_detector_sizes(detector.max_side):
        blank = np.zeros((height, width, 3), np.uint8)
        for count in range(max_images, 0, -1):
            detector.detect_batch([blank] * count)


def warm_up_embedder(embedder: ChipEmbedder) -> None:
    """Embed ``embedder.batch_size`` down to 1 blank chips at once."""
    side = embedder.chip_side
    for count in range(embedder.batch_size, 0, -1):
        embedder.embed(np.zeros((count, side, side, 3), np.uint8))


def warm_up_in_background(pipeline, max_images: int) -> threading.Thread:
    """Start ``pipeline.warm_up(max_images)`` in a thread of its own and return it: a process serves at
    once (a replica replacing a dead one is not held back), its first requests running beside the
    warm-up, which meets the largest inputs within its first second or so."""
    def run() -> None:
        try:
            log.info("warm-up finished in %.1f s", pipeline.warm_up(max_images))
        except Exception:  # an optimisation only: the process serves without it
            log.exception("the warm-up failed")

    thread = threading.Thread(target=run, name="pipeline-warm-up", daemon=True)
    thread.start()
    return thread


def timed(name: str, warm_up, *args) -> float:
    """Run ``warm_up(*args)``, log and return its seconds."""
    started = time.perf_counter()
    warm_up(*args)
    seconds = time.perf_counter() - started
    log.info("warmed up %s in %.2f s", name, seconds)
    return seconds
