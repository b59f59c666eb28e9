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
from collections.abc import Callable
from contextlib import contextmanager

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


def no_wait() -> None:
    """The default ``wait`` before each warm-up run: none."""


def warm_up_detector(detector: YuNetDetector, max_images: int, wait: Callable[[], object] = no_wait) -> None:
    """Detect in ``max_images`` down to 1 blank images at once, at each typical padded size;
    ``wait()`` before each run."""
    for height, width in typical_detector_sizes(detector.max_side):
        blank = np.zeros((height, width, 3), np.uint8)
        for count in range(max_images, 0, -1):
            wait()
            detector.detect_batch([blank] * count)


def warm_up_embedder(embedder: ChipEmbedder, wait: Callable[[], object] = no_wait) -> None:
    """Embed ``embedder.batch_size`` down to 1 blank chips at once; ``wait()`` before each run."""
    side = embedder.chip_side
    for count in range(embedder.batch_size, 0, -1):
        wait()
        embedder.embed(np.zeros((count, side, side, 3), np.uint8))


def warm_up_in_background(pipeline, max_images: int, wait: Callable[[], object] = no_wait) -> threading.Thread:
    """Start ``pipeline.warm_up(max_images, wait)`` in a thread of its own and return it: a process
    serves at once (a replica replacing a dead one is not held back); ``wait`` holds each warm-up run
    back while the process has requests to serve (see :class:`IdleGate`)."""
    def run() -> None:
        try:
            log.info("warm-up finished in %.1f s", pipeline.warm_up(max_images, wait))
        except Exception:  # an optimisation only: the process serves without it
            log.exception("the warm-up failed")

    thread = threading.Thread(target=run, name="pipeline-warm-up", daemon=True)
    thread.start()
    return thread


class IdleGate:
    """Lets a background warm-up run only while a serving process is idle: :meth:`busy` wraps each
    batch served; :meth:`wait` returns once none is in flight and none ended in the last ``quiet_s``
    (a steady load leaves gaps between batches too short for a warm-up run)."""

    def __init__(self, quiet_s: float = 0.2):
        self.quiet_s = quiet_s
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last_busy = 0.0

    @contextmanager
    def busy(self):
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._last_busy = time.monotonic()

    def wait(self) -> None:
        while True:
            with self._lock:
                quiet_for = time.monotonic() - self._last_busy
                if not self._in_flight and quiet_for >= self.quiet_s:
                    return
            time.sleep(self.quiet_s if self._in_flight else self.quiet_s - quiet_for)


def timed(name: str, warm_up, *args) -> float:
    """Run ``warm_up(*args)``, log and return its seconds."""
    started = time.perf_counter()
    warm_up(*args)
    seconds = time.perf_counter() - started
    log.info("warmed up %s in %.2f s", name, seconds)
    return seconds
