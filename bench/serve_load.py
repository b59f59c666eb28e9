"""HTTP load on the served API: recognize and add-face throughput and latency, 8 concurrent clients.

Starts the platform exactly as `faces serve` does (embedded PostgreSQL, local Ray, Serve), enrolls
one photo of each lfw-dev person, then drives load from a separate process; once with HAProxy as the
HTTP ingress (the default) and once with Serve's Python proxy. Baseline in the same run: the served
recognize's own pipeline work (the embedder's ``process_batch``, same settings and inference
threads) in a plain loop in one process (the ceiling). Prints where the CPU goes per process of
this platform (CPU time, robust on a busy machine where wall-clock rates are not), and with
``--profile DIR`` the hottest functions of the ingress, embedder and shard processes (py-spy).

    python bench/serve_load.py [--seconds 30] [--clients 8] [--ingress both|haproxy|serve-proxy] [--profile DIR]
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
from bench.stack_profile import SAMPLES_PER_S, hottest, record  # noqa: E402


def ceiling(paths: list[Path], seconds: float) -> dict:
    """The served recognize's own pipeline work in a plain loop, one image at a time, in one process:
    :func:`actors.face_batch.process_batch` on a pipeline opened as an embedder replica opens it (the
    same settings, backend and inference threads), each image as the request recognize sends (no
    quality, no crops). Images/s, and CPU ms per image (all threads of this process)."""
    from actors.face_batch import FaceRequest, process_batch
    from facecore.pipelines import open_pipeline
    from faces_settings import Settings

    settings = Settings()
    pipeline = open_pipeline(settings.pipeline_config())
    requests = [FaceRequest(image=p.read_bytes(), det_prob_threshold=settings.det_prob_threshold, quality=False)
                for p in paths]
    process_batch(pipeline, requests[:4])
    done, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        process_batch(pipeline, [requests[done % len(requests)]])
        done += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {"images_per_s": done / elapsed, "cpu_ms_per_image": 1000 * cpu / done}


INGRESSES = {"haproxy": "HAProxy", "serve-proxy": "Serve proxy"}
# the ingress's own processes: always in the CPU table, however little they spend
INGRESS_ROLES = ("haproxy", "HAProxyManager", "ProxyActor", "Ingress")
# the processes of a recognize request's path that --profile samples with py-spy
PROFILED_ROLES = ("Ingress", "Embedder", "IndexShard", "ProxyActor")


def lfw_people() -> dict[str, list[Path]]:
    """The lfw-dev photos by person."""
    people: dict[str, list[Path]] = {}
    for path in lfw_images():
        people.setdefault(path.parent.name, []).append(path)
    return people


@contextmanager
def bench_platform(port: int = 18000, haproxy: bool = True) -> Iterator[tuple[object, str]]:
    """The platform started as `faces serve` does, on a temporary data dir (the converted models of
    ./data reused), with one recognition service: yields the platform and the service's API key.
    ``haproxy``: HAProxy or Serve's Python proxy as the ingress."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from faces_settings import Settings
    from serve_app.client import FaceClient
    from serve_app.platform import start_platform

    with tempfile.TemporaryDirectory() as data_dir:
        models = Path("data/models").resolve()
        if models.is_dir():
            (Path(data_dir) / "models").symlink_to(models, target_is_directory=True)
        platform = start_platform(Settings(data_dir=Path(data_dir), port=port, admin_token="bench", haproxy=haproxy),
                                  ray_init_options={"log_to_driver": False})
        try:
            admin = FaceClient(platform.url, admin_token="bench")
            application = admin.create_application("bench")
            service = admin.create_service(application["id"], "load", "recognition")
            admin.set_quotas(service["id"], requests_per_s=1e6)  # measure the platform, not its rate limit
            yield platform, service["api_key"]
        finally:
            platform.stop()


def measure(ingress: str, args, people: dict[str, list[Path]], probes: list[Path]) -> dict:
    """Start the platform with one ingress, enroll, then drive add-face and recognize load."""
    with bench_platform(args.port, haproxy=ingress == "haproxy") as (platform, key):
        add_bodies = [({"subject": name}, files[0].read_bytes()) for name, files in people.items()]
        add = run_load(platform.url, key, "/api/v1/recognition/faces", add_bodies, args.clients,
                       min(args.seconds, 15.0))
        # this platform's processes: the driver's (Ray, its workers, HAProxy, the load generator) and PostgreSQL's
        roots = [os.getpid(), *([platform.embedded_postgres.pid] if platform.embedded_postgres else [])]
        before = cpu_seconds(roots)
        if args.profile:
            sampled = {role: pid for pid, (role, _) in before.items() if role in PROFILED_ROLES}
            samplers = record(sampled, max(1.0, args.seconds - 2), args.profile / ingress)
        recognize = run_load(platform.url, key, "/api/v1/recognition/recognize",
                             [({}, p.read_bytes()) for p in probes], args.clients, args.seconds)
        spent = cpu_split(before, cpu_seconds(roots))
        spent["load generator"] = recognize.client_cpu_s
        if args.profile:
            for sampler in samplers:
                sampler.wait()
    return {"recognize": recognize, "add": add, "cpu_seconds": spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--ingress", choices=[*INGRESSES, "both"], default="both",
                        help="HTTP ingress to measure (both: HAProxy, then Serve's Python proxy as the baseline)")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--profile", type=Path, default=None,
                        help="folder: sample the recognize path's processes with py-spy during the recognize "
                             "run and print their hottest functions")
    args = parser.parse_args()

    people = lfw_people()
    probes = [p for files in people.values() for p in files]

    baseline = ceiling(probes, args.seconds)
    ceiling_ips = baseline["images_per_s"]
    ingresses = list(INGRESSES) if args.ingress == "both" else [args.ingress]
    runs = {ingress: measure(ingress, args, people, probes) for ingress in ingresses}

    rows = []
    for ingress, run in runs.items():
        rows += [[f"recognize (HTTP, {INGRESSES[ingress]})", run["recognize"].requests_per_s,
                  run["recognize"].p50_ms, run["recognize"].p99_ms,
                  run["recognize"].requests_per_s / ceiling_ips],
                 [f"add face (HTTP, {INGRESSES[ingress]})", run["add"].requests_per_s, run["add"].p50_ms,
                  run["add"].p99_ms, run["add"].requests_per_s / ceiling_ips]]
    rows.append(["recognize's pipeline work, plain loop (ceiling)", ceiling_ips, "-", "-", 1.0])
    print(f"\n{args.clients} concurrent clients, {args.seconds:.0f} s, lfw-dev images\n")
    print_table(["path", "requests/s", "p50 ms", "p99 ms", "/ ceiling"], rows)
    for ingress, run in runs.items():
        print(f"\nCPU per recognize request with the {INGRESSES[ingress]} ingress, by process "
              f"(the ceiling spends {baseline['cpu_ms_per_image']:.1f} ms of CPU per image)\n")
        print_table(["process", "CPU ms per request"], cpu_rows(run["cpu_seconds"], run["recognize"].requests))
        print(f"\nall processes: {1000 * sum(run['cpu_seconds'].values()) / run['recognize'].requests:.1f} ms of "
              f"CPU per request")
    if args.profile:
        print_profiles(args.profile, runs)
    results = {ingress: {"recognize": vars(run["recognize"]), "add": vars(run["add"]),
                         "cpu_seconds": run["cpu_seconds"]} for ingress, run in runs.items()}
    results["ceiling"] = baseline
    print(f"results: {save_results('serve_load', results)}")


def cpu_rows(spent: dict[str, float], requests: int) -> list[list]:
    """The 12 costliest processes, and the ingress's own processes wherever they rank."""
    by_cost = sorted(spent.items(), key=lambda item: -item[1])
    shown = by_cost[:12] + [(role, s) for role, s in by_cost[12:] if role in INGRESS_ROLES]
    return [[role, 1000 * seconds / requests] for role, seconds in shown]


def print_profiles(folder: Path, runs: dict) -> None:
    """Per ingress and sampled process, the functions on the CPU in most samples (inclusive)."""
    for ingress in runs:
        for path in sorted((folder / ingress).glob("*.txt")):
            total, top = hottest(path)
            print(f"\n{INGRESSES[ingress]} ingress, {path.stem}: {total} samples at {SAMPLES_PER_S}/s "
                  f"(stacks in {path})\n")
            print_table(["function", "share of samples"], [[name, count / max(1, total)] for name, count in top])


if __name__ == "__main__":
    main()
