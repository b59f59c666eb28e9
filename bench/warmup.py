"""Warm-up of the face pipeline: what a new input shape costs a replica, with and without warm-up.

The inference backends compile kernels the first time an input shape appears (OpenVINO's CPU plugin
caches them per shape): the first run at each embedder batch size (1..``embed_batch`` faces) and at
each detector batch (1..``detect_batch`` images of one padded size) is slower, and the process's
memory steps up. Each mode runs in a fresh process with the embedder replicas' environment (the
same models, compiled models cached on disk beforehand, so every mode pays the same opening cost):

- ``cold``: no warm-up (the replica as it was);
- ``warm``: :meth:`FacePipeline.warm_up` at the start, as the embedder replica does now: every
  embedder batch size, every detector batch size at each typical photo size;
- ``buckets``: the alternative, padded buckets: every run padded with blank inputs to the next of
  :data:`BUCKETS` (faces) or :data:`DETECT_BUCKETS` (images), and a warm-up of those sizes only.

Per mode: opening and warm-up time, RSS after each; then, on real lfw-dev faces, every embedder batch
size and the detector at every batch size and typical photo size, in the order a replica meets them:
each shape's first and second run (ms) and the RSS the first added; finally the steady speed
(ms/face over every batch size, each run three times after its first).

    python bench/warmup.py [--threads 2] [--modes cold,warm,buckets]

Prints a table per mode and a summary table; writes ``bench/results/warmup.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import lfw_images, print_table, save_results  # noqa: E402

MB = 2**20
STEADY_REPEATS = 3
BUCKETS = (1, 2, 4, 8, 16, 32)
DETECT_BUCKETS = (1, 2, 4, 8)


def _bucket(count: int, buckets: tuple[int, ...]) -> int:
    return next((size for size in buckets if size >= count), count)


def _padded(inputs: np.ndarray | list, buckets: tuple[int, ...]):
    """``inputs`` with blank ones appended up to their bucket's size."""
    missing = _bucket(len(inputs), buckets) - len(inputs)
    if isinstance(inputs, list):
        return inputs + [np.zeros_like(inputs[0])] * missing
    return np.concatenate([inputs, np.zeros((missing, *inputs.shape[1:]), inputs.dtype)])


def rss() -> int:
    """This process's resident memory, bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _real_inputs(pipeline, embed_batch: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``embed_batch`` aligned chips of lfw-dev faces, and lfw-dev photos decoded."""
    paths = lfw_images(limit=64)
    images = pipeline.decode([path.read_bytes() for path in paths])
    chips = [face.chip for per_image in pipeline.analyze(images, quality=False) for face in per_image]
    return np.stack(chips[:embed_batch]), images


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def _probe(mode: str, threads: int, models_dir: str, inputs: tuple[np.ndarray, list[np.ndarray]]) -> dict:
    import cv2

    from facecore.pipeline import FacePipeline, PipelineConfig
    from facecore.warmup import typical_detector_sizes

    config = PipelineConfig(threads=threads, cache_dir=models_dir)
    base = rss()
    started = time.perf_counter()
    pipeline = FacePipeline(config)
    opened_s, opened_rss = time.perf_counter() - started, rss()
    embed, detect = pipeline.embedder.embed, pipeline.detector.detect_batch
    if mode == "buckets":
        def embed(chips):
            return pipeline.embedder.embed(_padded(chips, BUCKETS))[:len(chips)]

        def detect(images):
            return pipeline.detector.detect_batch(_padded(images, DETECT_BUCKETS))[:len(images)]
    started = time.perf_counter()
    if mode == "warm":
        pipeline.warm_up(max_images=config.detect_batch)
    elif mode == "buckets":
        side = pipeline.embedder.chip_side
        for size in reversed(BUCKETS):  # largest first, as FacePipeline.warm_up
            embed(np.zeros((size, side, side, 3), np.uint8))
        for height, width in typical_detector_sizes(config.max_side):
            for count in reversed(DETECT_BUCKETS):
                detect([np.zeros((height, width, 3), np.uint8)] * count)
    warmup_s = time.perf_counter() - started
    warmed_rss = rss()
    chips, photos = inputs
    rows = []
    for size in range(1, config.embed_batch + 1):
        before = rss()
        first = _timed(lambda: embed(chips[:size]))
        grown = rss() - before
        rows.append(["embed", f"{size} faces", first, _timed(lambda: embed(chips[:size])), grown / MB])
    for height, width in typical_detector_sizes(config.max_side):
        images = [cv2.resize(photo, (width, height)) for photo in photos[:config.detect_batch]]
        for count in range(1, config.detect_batch + 1):
            before = rss()
            first = _timed(lambda: detect(images[:count]))
            grown = rss() - before
            rows.append(["detect", f"{count} x {height}x{width}", first, _timed(lambda: detect(images[:count])),
                         grown / MB])
    steady = []
    for size in range(1, config.embed_batch + 1):
        times = [_timed(lambda: embed(chips[:size])) for _ in range(STEADY_REPEATS)]
        steady.append(statistics.median(times) / size)
    detect_steady = []
    images = [cv2.resize(photo, (width, height)) for photo in photos[:config.detect_batch]]  # the last size
    for count in range(1, config.detect_batch + 1):
        times = [_timed(lambda: detect(images[:count])) for _ in range(STEADY_REPEATS)]
        detect_steady.append(statistics.median(times) / count)
    return {"mode": mode, "open_s": opened_s, "open_rss_mb": (opened_rss - base) / MB, "warmup_s": warmup_s,
            "warmup_rss_mb": (warmed_rss - opened_rss) / MB, "probe_rss_mb": (rss() - warmed_rss) / MB,
            "rss_mb": rss() / MB, "steady_ms_per_face": statistics.mean(steady),
            "steady_detect_ms_per_image": statistics.mean(detect_steady), "shapes": rows}


def _child(mode, threads, models_dir, inputs, queue) -> None:
    queue.put(_probe(mode, threads, models_dir, inputs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="cold,warm,buckets")
    args = parser.parse_args()
    from facecore.pipeline import FacePipeline, PipelineConfig
    from serve_app.app import EMBEDDER_ENV

    for name, value in EMBEDDER_ENV.items():  # the modes' processes run as the embedder replicas do
        os.environ.setdefault(name, value)

    with tempfile.TemporaryDirectory(prefix="warmup-bench-") as models_dir:
        preparing = FacePipeline(PipelineConfig(threads=args.threads, cache_dir=models_dir))  # graphs, compiled cache
        inputs = _real_inputs(preparing, preparing.config.embed_batch)
        del preparing
        context = multiprocessing.get_context("spawn")
        results = []
        for mode in args.modes.split(","):
            queue = context.Queue()
            child = context.Process(target=_child, args=(mode, args.threads, models_dir, inputs, queue))
            child.start()
            results.append(queue.get())
            child.join()
    for result in results:
        print(f"\n{result['mode']}: first and second run of each shape, in the order met")
        print_table(["model", "input", "first ms", "second ms", "RSS added by the first, MB"], result["shapes"])
    print()
    print_table(["mode", "open s", "open RSS MB", "warm-up s", "warm-up RSS MB", "RSS added by new shapes MB",
                 "RSS at end MB", "embed ms/face (1..32 faces)", "detect ms/image (1..8 images)",
                 "worst first/second"],
                [[r["mode"], r["open_s"], r["open_rss_mb"], r["warmup_s"], r["warmup_rss_mb"], r["probe_rss_mb"],
                  r["rss_mb"], r["steady_ms_per_face"], r["steady_detect_ms_per_image"],
                  max(row[2] / row[3] for row in r["shapes"])]
                 for r in results])
    print(f"results: {save_results('warmup', {'threads': args.threads, 'modes': results})}")


if __name__ == "__main__":
    main()
