"""Warm-up of the face pipeline: after it, real faces at batch sizes and photo sizes never run before
add no memory. Each side runs in a fresh process (tests/warmup_probe.py): the observable is that
process's RSS, which a cold pipeline's first large batch visibly grows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecore.warmup import IdleGate
from serve_app.app import EMBEDDER_ENV

PROBE = Path(__file__).with_name("warmup_probe.py")
MB = 2**20
# What new shapes may still add after the warm-up (a few MB of kernels and allocator noise); the
# first batch of 29 faces alone adds about 200 MB to a cold process.
WARM_GROWTH_BOUND = 32 * MB


@pytest.fixture(scope="module")
def probe_inputs(pipeline, data_dir, tmp_path_factory) -> Path:
    """Aligned chips of 29 lfw-dev faces, and 8 lfw-dev photos at 640x480 (a typical photo's size)."""
    paths = sorted((data_dir / "lfw-dev").glob("*/*.jpg"))[:32]
    images = pipeline.decode([path.read_bytes() for path in paths])
    chips = [face.chip for faces in pipeline.analyze(images, limit=1, quality=False) for face in faces]
    path = tmp_path_factory.mktemp("warmup") / "inputs.npz"
    np.savez(path, chips=np.stack(chips[:29]), photos=np.stack([cv2.resize(image, (640, 480)) for image in images[:8]]))
    return path


def _probe(mode: str, models_dir: Path, inputs: Path) -> dict:
    done = subprocess.run([sys.executable, str(PROBE), str(models_dir), str(inputs), mode], capture_output=True,
                          text=True, timeout=150, env={**os.environ, **EMBEDDER_ENV})  # as the embedder replicas run
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_after_warm_up_new_batch_sizes_add_no_memory(models_dir, probe_inputs):
    warm = _probe("warm", models_dir, probe_inputs)
    assert warm["grown"] < WARM_GROWTH_BOUND, f"new shapes added {warm['grown'] / MB:.0f} MB after the warm-up"
    assert all(abs(norm - 1) < 1e-3 for norms in warm["norms"] for norm in norms)  # real embeddings came out
    assert all(found >= 1 for found in warm["faces"])
    cold = _probe("cold", models_dir, probe_inputs)
    assert cold["grown"] > 3 * WARM_GROWTH_BOUND, f"a cold pipeline grew by {cold['grown'] / MB:.0f} MB only"


def test_the_warm_up_waits_while_batches_are_served():
    gate = IdleGate(quiet_s=0.05)
    released = threading.Event()
    with gate.busy():
        threading.Thread(target=lambda: (gate.wait(), released.set()), daemon=True).start()
        assert not released.wait(0.3)
    assert released.wait(5)
