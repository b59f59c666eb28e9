"""Video throughput: one stream worker with detection on every frame, and how many streams keep up
in real time at 5 detections/s, against the decode-only ceiling of the same file (FFmpeg via PyAV).

The clip is synthetic: lfw-dev stills moving on a textured background, 1280x720 at 25 fps, with
1, 2, 3 and then 4 faces (a quarter of the clip each). Streams are measured twice: unpaced (each as
fast as it can: x real time >= 1 means the cores could keep up) and paced (played at the clip's own
speed, like cameras; a stream keeps up when it processes at least 98% of its due detections). On a
machine shared with other work these wall-clock figures move with its load; the CPU seconds spent
per stream-second do not, and give the capacity of an idle machine. A "worker" is the per-stream pipeline of the
platform's VideoWorker (decode on a thread, detect, track, embed on demand, match, crop) with a
local face pipeline instead of the Embedder deployment. Streams share one pipeline, as workers
share the embedder replicas.

    python bench/video.py [--seconds 20] [--max-streams 12]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import Stopwatch, data_dir, print_table, save_results  # noqa: E402
from facecore.pipeline import FacePipeline  # noqa: E402
from faces_settings import Settings  # noqa: E402
from facevideo.config import ProcessingOptions  # noqa: E402
from facevideo.processor import LocalBackend, MatrixWatchlist, StreamProcessor  # noqa: E402
from facevideo.source import FrameReader  # noqa: E402
from facevideo.synthetic import Appearance, write_video  # noqa: E402

SIZE = (1280, 720)
FPS = 25
PEOPLE = ("Omar_Sharif", "Nicolas_Cage", "Jacques_Chirac", "Demi_Moore")
REALTIME_DETECTIONS_PER_S = 5.0


def make_clip(path: Path, seconds: float) -> Path:
    """1..4 faces: person k (k = 0..3) is on screen from k/4 of the clip to its end, drifting."""
    root = data_dir() / "lfw-dev"
    stills = [cv2.imread(str(sorted((root / name).glob("*.jpg"))[1])) for name in PEOPLE]
    centres = [(0.2, 0.45), (0.45, 0.55), (0.7, 0.45), (0.88, 0.6)]
    appearances = [Appearance(photo, seconds * k / 4, seconds, centre, 300, grow=1.15, drift=(6 - 4 * k, 2))
                   for k, (photo, centre) in enumerate(zip(stills, centres))]
    return write_video(path, appearances, seconds, size=SIZE, fps=FPS)


def decode_only(path: Path, convert: bool) -> dict:
    """Frames/s of FFmpeg decoding alone (frame threading on, as in the workers), optionally with the
    conversion to a BGR array that every processed frame needs."""
    with av.open(str(path)) as container, Stopwatch() as watch:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = 0
        for frame in container.decode(stream):
            if convert:
                frame.to_ndarray(format="bgr24")
            frames += 1
    return {"frames": frames, "seconds": watch.seconds, "fps": frames / watch.seconds}


def watchlist(pipeline: FacePipeline) -> MatrixWatchlist:
    root = data_dir() / "lfw-dev"
    blobs = [sorted((root / name).glob("*.jpg"))[0].read_bytes() for name in PEOPLE]
    return MatrixWatchlist(list(PEOPLE), np.stack([v[0] for v in pipeline.embed(blobs, limit=1)]))


async def run_streams(path: Path, pipeline: FacePipeline, streams: int, max_fps: float, realtime: bool) -> dict:
    """Run ``streams`` workers on the clip at once; per-stream frames, wall time, drops."""
    backend = LocalBackend(pipeline)
    matches = watchlist(pipeline)

    async def one(index: int) -> dict:
        processor = StreamProcessor(backend, matches, ProcessingOptions(mode="realtime", max_fps=max_fps),
                                    session=f"s{index}")
        reader = FrameReader(str(path), max_fps, realtime=realtime)
        started = time.perf_counter()
        await reader.start()
        events = 0
        while (frame := await reader.next()) is not None:
            events += len(await processor.process(frame))
        events += len(await processor.finish())
        return {"frames": processor.frames, "faces": processor.faces, "embedded": processor.embedded,
                "events": events, "seconds": time.perf_counter() - started, "dropped": reader.dropped}

    cpu_before = cpu_seconds()
    per_stream = await asyncio.gather(*(one(i) for i in range(streams)))
    return {"streams": streams, "per_stream": per_stream, "cpu_seconds": cpu_seconds() - cpu_before}


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summary(result: dict, clip_seconds: float, max_fps: float) -> dict:
    """Totals of a multi-stream run: detections/s (all streams), speed against real time, drops."""
    slowest = max(s["seconds"] for s in result["per_stream"])
    frames = sum(s["frames"] for s in result["per_stream"])
    expected = result["streams"] * clip_seconds * max_fps
    return {"streams": result["streams"], "detections_per_s": frames / slowest,
            "speed_vs_realtime": clip_seconds / slowest, "detections": frames,
            "expected_detections": expected, "dropped": sum(s["dropped"] for s in result["per_stream"]),
            "faces": sum(s["faces"] for s in result["per_stream"]),
            "embedded": sum(s["embedded"] for s in result["per_stream"]),
            "cpu_per_stream_second": result["cpu_seconds"] / (result["streams"] * clip_seconds)}


def keeps_up(paced: dict) -> bool:
    """Played in real time, a run keeps up when it processed at least 98% of the due detections."""
    return paced["detections"] >= 0.98 * paced["expected_detections"]


def stream_counts(limit: int) -> list[int]:
    return [n for n in (1, 2, 3, 4, 6, 8, 10, 12, 16, 20) if n <= limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="clip length")
    parser.add_argument("--max-streams", type=int, default=12, help="largest number of streams tried")
    parser.add_argument("--threads", type=int, default=2, help="inference threads of the shared pipeline (its "
                        "backend and precision: FACES_BACKEND, FACES_PRECISION, as in the platform)")
    args = parser.parse_args()
    results: dict = {"cpus": os.cpu_count(), "clip": {"size": SIZE, "fps": FPS, "seconds": args.seconds},
                     "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as folder:
        clip = make_clip(Path(folder) / "clip.mp4", args.seconds)
        decode_only(clip, convert=False)  # warm the page cache and FFmpeg
        results["decode"] = decode_only(clip, convert=False)
        results["decode_bgr"] = decode_only(clip, convert=True)
        pipeline = FacePipeline(Settings(threads=args.threads).pipeline_config())
        running = pipeline.embedder.description
        results["backend"] = f"{running.backend}/{running.device}/{running.precision}"
        asyncio.run(run_streams(clip, pipeline, 1, 0.0, realtime=False))  # warm-up
        run = asyncio.run(run_streams(clip, pipeline, 1, 0.0, realtime=False))
        every_frame = run["per_stream"][0]
        results["worker_every_frame"] = {**every_frame, "fps": every_frame["frames"] / every_frame["seconds"],
                                         "cpu_ms_per_frame": 1000 * run["cpu_seconds"] / every_frame["frames"]}

        # Unpaced: every stream as fast as it can; x real time >= 1 means the cores could keep up.
        unpaced = []
        for streams in stream_counts(args.max_streams):
            row = summary(asyncio.run(run_streams(clip, pipeline, streams, REALTIME_DETECTIONS_PER_S, False)),
                          args.seconds, REALTIME_DETECTIONS_PER_S)
            unpaced.append(row)
            print(f"  unpaced, {streams} stream(s): {row['speed_vs_realtime']:.2f}x real time", flush=True)
            if row["speed_vs_realtime"] < 1.0:
                break
        # Paced: files played at their own pace, like cameras; frames not taken in time are dropped.
        paced = []
        for row in unpaced:
            check = summary(asyncio.run(run_streams(clip, pipeline, row["streams"], REALTIME_DETECTIONS_PER_S, True)),
                            args.seconds, REALTIME_DETECTIONS_PER_S)
            paced.append(check)
            print(f"  paced, {row['streams']} stream(s): {check['detections']}/{check['expected_detections']:.0f} "
                  f"detections, {check['dropped']} dropped", flush=True)
            if not keeps_up(check):
                break
        results["unpaced"], results["paced"] = unpaced, paced
    results["load_average_after"] = os.getloadavg()

    def fps(value: float) -> float | int:
        return int(round(value)) if value >= 100 else round(value, 1)

    decode, decode_bgr, worker = results["decode"], results["decode_bgr"], results["worker_every_frame"]
    print(f"\n{SIZE[0]}x{SIZE[1]} {FPS} fps clip, {args.seconds:g} s, 1-4 faces; {os.cpu_count()} CPUs; "
          f"{results['backend']}, {args.threads} threads; load average before {results['load_average_before'][0]:.2f}\n")
    print_table(["measurement", "frames/s", "x real time", "notes"], [
        ["decode only (baseline: FFmpeg ceiling)", fps(decode["fps"]), decode["fps"] / FPS, "PyAV, frame threads"],
        ["decode + BGR conversion", fps(decode_bgr["fps"]), decode_bgr["fps"] / FPS,
         "what each processed frame costs"],
        ["one worker, detection on every frame", fps(worker["fps"]), worker["fps"] / FPS,
         f"{worker['faces'] / worker['frames']:.2f} faces/frame, "
         f"{worker['embedded'] / worker['frames']:.2f} embeddings/frame, "
         f"{worker['cpu_ms_per_frame']:.0f} CPU ms/frame"],
    ])
    print()
    rows = []
    for row in results["unpaced"]:
        check = next((p for p in results["paced"] if p["streams"] == row["streams"]), None)
        rows.append([row["streams"], row["cpu_per_stream_second"], row["speed_vs_realtime"],
                     f"{check['detections_per_s']:.1f} of {row['streams'] * REALTIME_DETECTIONS_PER_S:g}" if check else "-",
                     f"{100 * check['dropped'] / check['expected_detections']:.1f}%" if check else "-",
                     ("yes" if keeps_up(check) else "no") if check else "-"])
    print_table(["streams at 5 detections/s", "CPU s per stream-second", "unpaced: x real time",
                 "paced: detections/s", "paced: frames dropped", "keeps up in real time"], rows)
    cost = results["unpaced"][-1]["cpu_per_stream_second"]  # with the most streams batched together
    print(f"\nCPU bound: {os.cpu_count()} cores / {cost:.3f} CPU s per stream-second = "
          f"{os.cpu_count() / cost:.1f} streams at 5 detections/s on an otherwise idle machine; "
          f"load average after {results['load_average_after'][0]:.2f}")
    print(f"\nresults: {save_results('video', results)}")


if __name__ == "__main__":
    main()
