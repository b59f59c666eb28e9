"""Face pipeline throughput on the lfw-dev photos, against the dlib (face_recognition) baseline.

Reports images/s and faces/s for detect, embed and the whole pipeline at batch 1 and 32 with 1 and
2 threads, then the dlib baseline (1 and 2 worker processes) on the same images, and the ratios.

    python bench/pipeline.py [--images N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Stopwatch, lfw_images, print_table, save_results  # noqa: E402
from bench.dlib_baseline import DlibPipeline, count_faces_in_process  # noqa: E402
from facecore.images import decode_image  # noqa: E402
from facecore.pipeline import FacePipeline, PipelineConfig  # noqa: E402

BATCHES = (1, 32)
THREADS = (1, 2)


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def measure_ours(paths: list[Path], threads: int, batch: int) -> dict:
    pipeline = FacePipeline(PipelineConfig(threads=threads, detect_batch=batch, embed_batch=batch))
    blobs = [p.read_bytes() for p in paths]
    images = [decode_image(b) for b in blobs]
    pipeline.analyze(blobs[:batch])  # warm-up
    with Stopwatch() as detect:
        detections = [faces for part in chunks(images, batch)
                      for faces in pipeline.detector.detect_batch(part, threshold=0.8)]
    faces = [face for per_image in pipeline.analyze(blobs) for face in per_image]
    chips = [face.chip for face in faces]
    with Stopwatch() as embed:
        for part in chunks(chips, batch):
            pipeline.embedder.embed(part)
    with Stopwatch() as whole:
        found = sum(len(per_image) for part in chunks(blobs, batch) for per_image in pipeline.analyze(part))
    n_images = len(paths)
    return {
        "threads": threads, "batch": batch, "images": n_images, "faces": found,
        "detect_images_per_s": n_images / detect.seconds,
        "detected_faces": sum(len(d) for d in detections),
        "embed_faces_per_s": len(chips) / embed.seconds, "embed_ms_per_face": 1000 * embed.seconds / len(chips),
        "pipeline_images_per_s": n_images / whole.seconds, "pipeline_faces_per_s": found / whole.seconds,
    }


def measure_dlib(paths: list[Path], processes: int) -> dict:
    if processes == 1:
        dlib_pipeline = DlibPipeline()
        images = [dlib_pipeline.load(p) for p in paths]
        with Stopwatch() as detect:
            boxes = [dlib_pipeline.detect(image) for image in images]
        with Stopwatch() as embed:
            embedded = sum(len(dlib_pipeline.embed(image, b)) for image, b in zip(images, boxes))
        with Stopwatch() as whole:
            found = sum(len(dlib_pipeline.analyze(p)) for p in paths)
        return {"processes": 1, "images": len(paths), "faces": found,
                "detect_images_per_s": len(paths) / detect.seconds,
                "embed_faces_per_s": embedded / embed.seconds, "embed_ms_per_face": 1000 * embed.seconds / embedded,
                "pipeline_images_per_s": len(paths) / whole.seconds, "pipeline_faces_per_s": found / whole.seconds}
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(count_faces_in_process, paths[:processes * 2])  # load the models in every worker
        with Stopwatch() as whole:
            found = sum(pool.map(count_faces_in_process, paths, chunksize=4))
    return {"processes": processes, "images": len(paths), "faces": found,
            "pipeline_images_per_s": len(paths) / whole.seconds, "pipeline_faces_per_s": found / whole.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=0, help="use the first N lfw-dev images (0: all)")
    args = parser.parse_args()
    paths = lfw_images(limit=args.images)
    ours = [measure_ours(paths, threads, batch) for threads in THREADS for batch in BATCHES]
    dlib = [measure_dlib(paths, processes) for processes in THREADS]

    print(f"\nlfw-dev: {len(paths)} images\n")
    rows = [[f"ours, {r['threads']} thread(s), batch {r['batch']}", r["detect_images_per_s"],
             r["embed_faces_per_s"], r["embed_ms_per_face"], r["pipeline_images_per_s"], r["pipeline_faces_per_s"]]
            for r in ours]
    rows += [[f"dlib baseline, {r['processes']} process(es)", r.get("detect_images_per_s", "-"),
              r.get("embed_faces_per_s", "-"), r.get("embed_ms_per_face", "-"),
              r["pipeline_images_per_s"], r["pipeline_faces_per_s"]] for r in dlib]
    print_table(["configuration", "detect images/s", "embed faces/s", "embed ms/face",
                 "pipeline images/s", "pipeline faces/s"], rows)
    best_ours = {t: max(r["pipeline_images_per_s"] for r in ours if r["threads"] == t) for t in THREADS}
    ratios = [[f"{t} core(s)", best_ours[t], d["pipeline_images_per_s"], best_ours[t] / d["pipeline_images_per_s"]]
              for t, d in zip(THREADS, dlib)]
    print()
    print_table(["cores", "ours images/s", "dlib images/s", "ratio"], ratios)
    print(f"\nresults: {save_results('pipeline', {'ours': ours, 'dlib': dlib})}")


if __name__ == "__main__":
    main()
