"""Run as a script by tests/test_warmup.py: a fresh process's memory as it meets new input shapes.

``python warmup_probe.py MODELS_DIR INPUTS.npz warm|cold`` opens the face pipeline as an embedder
replica does (OpenVINO, 2 threads), warms it up (``warm``) or not, then runs real inputs at shapes no
real input had before: faces embedded 29, 13 and 5 at a time, 7 photos detected at once. Prints, as
JSON, the RSS (bytes) those runs added and what they found.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

EMBED_COUNTS = (29, 13, 5)
DETECT_COUNT = 7


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(models_dir: str, inputs_path: str, mode: str) -> None:
    from facecore.pipeline import FacePipeline, PipelineConfig

    pipeline = FacePipeline(PipelineConfig(threads=2, backend="openvino", cache_dir=models_dir))
    if mode == "warm":
        pipeline.warm_up(pipeline.config.detect_batch)
    inputs = np.load(inputs_path)
    chips, photos = inputs["chips"], list(inputs["photos"][:DETECT_COUNT])
    before = rss()
    norms = [np.linalg.norm(pipeline.embedder.embed(chips[:count]), axis=1).tolist() for count in EMBED_COUNTS]
    faces = [len(found) for found in pipeline.detector.detect_batch(photos, 0.8)]
    print(json.dumps({"grown": rss() - before, "norms": norms, "faces": faces}))


if __name__ == "__main__":
    main(*sys.argv[1:])
