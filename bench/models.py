"""Speed of each embedding model (sface, dlib-resnet, fusion) on the lfw-dev photos, with dlib's own
runtime on the same chips as the baseline of the port.

1. Embedding alone, ms/face at batch 32: each model on its own chips (aligned once beforehand), on
   the configured backend (default ``auto``: OpenVINO on x86); dlib-bin's ``compute_face_descriptor``
   on the same 150x150 chips, one at a time, for dlib's ResNet.
2. The whole pipeline (decode, detect, align, embed; what recognition needs) with each model, faces/s.

    python bench/models.py [--images N] [--threads 2] [--backend auto] [--precision auto] [--repeats 3]

Needs the ``dlib`` extra (torch, to build dlib's graph once) and dlib-bin (the ``test`` or ``bench`` extra).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import lfw_images, print_table, save_results  # noqa: E402
from facecore.embed import EMBEDDING_MODELS, AlignedFaces, FusionEmbedder  # noqa: E402
from facecore.models import DLIB_RESNET  # noqa: E402
from facecore.pipeline import FacePipeline, PipelineConfig  # noqa: E402

BATCH = 32
THRESHOLD = 0.8


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def chunks(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def dlib_ms_per_face(chips: np.ndarray, repeats: int) -> float:
    """dlib-bin's own ResNet on the same chips (RGB), one chip per call as face_recognition does."""
    import dlib
    import importlib.resources

    weights = importlib.resources.files("face_recognition_models").joinpath(
        "models", "dlib_face_recognition_resnet_model_v1.dat")
    encoder = dlib.face_recognition_model_v1(str(weights))
    rgb = [np.ascontiguousarray(chip[:, :, ::-1]) for chip in chips]
    encoder.compute_face_descriptor(rgb[0])
    return 1000 * best_of(repeats, lambda: [encoder.compute_face_descriptor(chip) for chip in rgb]) / len(rgb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=0, help="use the first N lfw-dev images (0: all)")
    parser.add_argument("--threads", type=int, default=2, help="inference threads")
    parser.add_argument("--backend", default="auto", help="inference backend")
    parser.add_argument("--precision", default="auto", help="inference precision")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the fastest counts")
    args = parser.parse_args()
    blobs = [path.read_bytes() for path in lfw_images(limit=args.images)]
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-models-") as cache:
        for model in EMBEDDING_MODELS:
            pipeline = FacePipeline(PipelineConfig(threads=args.threads, backend=args.backend, precision=args.precision,
                                                   detect_batch=BATCH, embed_batch=BATCH, cache_dir=cache, model=model))
            decoded = pipeline.decode(blobs)
            faces = pipeline.detect_decoded(decoded, THRESHOLD, 0, None)
            aligned = AlignedFaces(decoded, [np.stack([f.landmarks for f in per_image]) if per_image
                                             else np.zeros((0, 5, 2)) for per_image in faces],
                                   boxes=[np.stack([f.box[:4] for f in per_image]) if per_image
                                          else np.zeros((0, 4)) for per_image in faces])
            embedder = pipeline.embedder
            members = embedder.members if isinstance(embedder, FusionEmbedder) else [embedder]
            for member in members:
                aligned.chips(member.spec.chip)  # align before timing: the embedding alone is timed
            pipeline.embedder.embed_aligned(aligned)  # warm-up
            embed_s = best_of(args.repeats, lambda: pipeline.embedder.embed_aligned(aligned))
            whole_s = best_of(args.repeats, lambda: [pipeline.analyze(part, THRESHOLD, quality=False)
                                                     for part in chunks(blobs, BATCH)])
            count = len(aligned)
            results[model] = {"backend": str(pipeline.embedder.description), "faces": count,
                              "embed_ms_per_face": 1000 * embed_s / count, "pipeline_faces_per_s": count / whole_s}
            rows.append([model, results[model]["backend"], results[model]["embed_ms_per_face"],
                         results[model]["pipeline_faces_per_s"]])
            if model == DLIB_RESNET.name:
                chips = aligned.chips(DLIB_RESNET.chip)
                results["dlib-bin"] = {"embed_ms_per_face": dlib_ms_per_face(chips, args.repeats)}
                rows.append(["dlib-bin (dlib's own runtime), same chips", "dlib/CPU/f32",
                             results["dlib-bin"]["embed_ms_per_face"], "-"])
    print(f"\nlfw-dev: {len(blobs)} images; {args.threads} threads\n")
    print_table(["model", "backend", f"embed ms/face (batch {BATCH})", "pipeline faces/s"], rows)
    print(f"\nresults: {save_results('models', results)}")


if __name__ == "__main__":
    main()
