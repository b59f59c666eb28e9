"""HTTP load on the served API: recognize and add-face throughput and latency, 8 concurrent clients.

Starts the platform exactly as `faces serve` does (embedded PostgreSQL, local Ray, Serve), enrolls
one photo of each lfw-dev person, then drives load from a separate process. Baseline in the same run:
the facecore pipeline alone in a plain loop in one process (the ceiling).

    python bench/serve_load.py [--seconds 30] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import lfw_images, print_table, save_results  # noqa: E402


def ceiling(paths: list[Path], seconds: float) -> float:
    """Images/s of FacePipeline.analyze in a plain loop, one image at a time, one process."""
    from facecore.pipeline import FacePipeline

    pipeline = FacePipeline()
    blobs = [p.read_bytes() for p in paths]
    pipeline.analyze(blobs[:4])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        pipeline.analyze([blobs[done % len(blobs)]])
        done += 1
    return done / (time.perf_counter() - started)


async def _drive(url: str, key: str, path: str, params: dict, bodies: list[tuple[dict, bytes]], clients: int,
                 seconds: float) -> list[float]:
    import httpx

    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": key}, timeout=60,
                                 limits=httpx.Limits(max_connections=clients)) as http:
        async def worker(offset: int) -> None:
            index = offset
            while time.perf_counter() < deadline:
                extra, body = bodies[index % len(bodies)]
                started = time.perf_counter()
                response = await http.post(path, params={**params, **extra}, files={"file": body})
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text}")
                latencies.append(time.perf_counter() - started)
                index += clients

        await asyncio.gather(*(worker(i) for i in range(clients)))
    return latencies


def _load_process(queue, url, key, path, params, bodies, clients, seconds) -> None:
    queue.put(asyncio.run(_drive(url, key, path, params, bodies, clients, seconds)))


def run_load(url: str, key: str, path: str, params: dict, bodies, clients: int, seconds: float) -> dict:
    """Load from a separate process; returns requests/s and latency percentiles in ms."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_load_process, args=(queue, url, key, path, params, bodies, clients, seconds))
    process.start()
    latencies = np.array(queue.get(timeout=seconds + 300))
    process.join()
    return {"requests": len(latencies), "requests_per_s": len(latencies) / seconds,
            "p50_ms": float(np.percentile(latencies, 50) * 1000), "p99_ms": float(np.percentile(latencies, 99) * 1000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from facecore.settings import Settings
    from serve_app.client import FaceClient
    from serve_app.platform import start_platform

    people: dict[str, list[Path]] = {}
    for path in lfw_images():
        people.setdefault(path.parent.name, []).append(path)
    probes = [p for files in people.values() for p in files]

    ceiling_ips = ceiling(probes, args.seconds)
    with tempfile.TemporaryDirectory() as data_dir:
        models = Path("data/models").resolve()
        if models.is_dir():
            (Path(data_dir) / "models").symlink_to(models, target_is_directory=True)
        platform = start_platform(Settings(data_dir=Path(data_dir), port=18000, admin_token="bench"),
                                  ray_init_options={"log_to_driver": False})
        try:
            admin = FaceClient(platform.url, admin_token="bench")
            application = admin.create_application("bench")
            key = admin.create_service(application["id"], "load", "recognition")["api_key"]
            add_bodies = [({"subject": name}, files[0].read_bytes()) for name, files in people.items()]
            add = run_load(platform.url, key, "/api/v1/recognition/faces", {}, add_bodies, args.clients,
                           min(args.seconds, 15.0))
            recognize = run_load(platform.url, key, "/api/v1/recognition/recognize", {},
                                 [({}, p.read_bytes()) for p in probes], args.clients, args.seconds)
        finally:
            platform.stop()

    rows = [["recognize (HTTP, Serve)", recognize["requests_per_s"], recognize["p50_ms"], recognize["p99_ms"]],
            ["add face (HTTP, Serve)", add["requests_per_s"], add["p50_ms"], add["p99_ms"]],
            ["facecore pipeline, plain loop (ceiling)", ceiling_ips, "-", "-"]]
    print(f"\n{args.clients} concurrent clients, {args.seconds:.0f} s, lfw-dev images\n")
    print_table(["path", "requests/s", "p50 ms", "p99 ms"], rows)
    print(f"\nrecognize / ceiling: {recognize['requests_per_s'] / ceiling_ips:.2f}")
    print(f"results: {save_results('serve_load', {'recognize': recognize, 'add': add, 'ceiling_images_per_s': ceiling_ips})}")


if __name__ == "__main__":
    main()
