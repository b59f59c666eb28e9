"""HTTP load on the served API: recognize and add-face throughput and latency, 8 concurrent clients.

Starts the platform exactly as `faces serve` does (embedded PostgreSQL, local Ray, Serve), enrolls
one photo of each lfw-dev person, then drives load from a separate process. Baseline in the same run:
the facecore pipeline alone in a plain loop in one process (the ceiling).

    python bench/serve_load.py [--seconds 30] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import lfw_images, print_table, save_results  # noqa: E402
from bench.cpu_split import cpu_seconds, cpu_split  # noqa: E402
from bench.http_load import run_load  # noqa: E402


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


def lfw_people() -> dict[str, list[Path]]:
    """The lfw-dev photos by person."""
    people: dict[str, list[Path]] = {}
    for path in lfw_images():
        people.setdefault(path.parent.name, []).append(path)
    return people


@contextmanager
def bench_platform(port: int = 18000) -> Iterator[tuple[object, str]]:
    """The platform started as `faces serve` does, on a temporary data dir (the converted models of
    ./data reused), with one recognition service: yields the platform and the service's API key."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from faces_settings import Settings
    from serve_app.client import FaceClient
    from serve_app.platform import start_platform

    with tempfile.TemporaryDirectory() as data_dir:
        models = Path("data/models").resolve()
        if models.is_dir():
            (Path(data_dir) / "models").symlink_to(models, target_is_directory=True)
        platform = start_platform(Settings(data_dir=Path(data_dir), port=port, admin_token="bench"),
                                  ray_init_options={"log_to_driver": False})
        try:
            admin = FaceClient(platform.url, admin_token="bench")
            application = admin.create_application("bench")
            yield platform, admin.create_service(application["id"], "load", "recognition")["api_key"]
        finally:
            platform.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    people = lfw_people()
    probes = [p for files in people.values() for p in files]

    ceiling_ips = ceiling(probes, args.seconds)
    with bench_platform() as (platform, key):
        add_bodies = [({"subject": name}, files[0].read_bytes()) for name, files in people.items()]
        add = run_load(platform.url, key, "/api/v1/recognition/faces", add_bodies, args.clients,
                       min(args.seconds, 15.0))
        before = cpu_seconds()
        recognize = run_load(platform.url, key, "/api/v1/recognition/recognize",
                             [({}, p.read_bytes()) for p in probes], args.clients, args.seconds)
        spent = cpu_split(before, cpu_seconds())
        spent["load generator"] = recognize.client_cpu_s

    rows = [["recognize (HTTP, Serve)", recognize.requests_per_s, recognize.p50_ms, recognize.p99_ms],
            ["add face (HTTP, Serve)", add.requests_per_s, add.p50_ms, add.p99_ms],
            ["facecore pipeline, plain loop (ceiling)", ceiling_ips, "-", "-"]]
    print(f"\n{args.clients} concurrent clients, {args.seconds:.0f} s, lfw-dev images\n")
    print_table(["path", "requests/s", "p50 ms", "p99 ms"], rows)
    print(f"\nrecognize / ceiling: {recognize.requests_per_s / ceiling_ips:.2f}")
    print("\nCPU per recognize request, by process (the ceiling spends "
          f"{2000 / ceiling_ips:.1f} ms of its 2 cores per image)\n")
    by_cost = sorted(spent.items(), key=lambda item: -item[1])[:12]
    print_table(["process", "CPU ms per request"],
                [[role, 1000 * seconds / recognize.requests] for role, seconds in by_cost])
    results = {"recognize": vars(recognize), "add": vars(add), "cpu_seconds": spent,
               "ceiling_images_per_s": ceiling_ips}
    print(f"results: {save_results('serve_load', results)}")


if __name__ == "__main__":
    main()
