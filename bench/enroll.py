"""Bulk enrollment on Ray Data: throughput and memory on lfw-dev repeated to N inputs, with baselines.

Measured in one run, on one machine:
- ceiling: the job's own pipeline work alone (``process_batch``: bytes in, the largest face's
  embedding and crop out) in one process, batches of 64 images, the platform's threads; measured
  before and after the job;
- bulk job: ``run_enroll`` of a Parquet manifest of N rows (the lfw-dev images cycled, each row its
  own face id, so every row is a new face) into a running platform (PostgreSQL, Ray, Serve): faces/s
  end to end (count pass, Ray Data and actor start-up, last commit and compaction included) and in
  the steady state (10%-90% of the inputs); private memory of the driver, the embedder actors and
  the index shard (their object-store pages apart) and the object store in use, sampled during the run;
  CPU milliseconds per input in every process of the job (driver, embedder actors, read tasks, shard,
  Ray's own processes; psutil per pid, robust on a busy machine) against the ceiling's CPU per image;
- HTTP path: one add-face call per image, with 1 and 8 concurrent clients.

    python bench/enroll.py [--inputs 20000] [--http-images 522]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Stopwatch, free_port, lfw_images, print_table, save_results  # noqa: E402
from bench.cpu_split import cpu_seconds, cpu_split, process_trees  # noqa: E402

MB = 2**20


def ceiling(paths: list[Path], settings, batch: int, passes: int = 2) -> dict:
    """Images/s and faces/s of the bulk job's own pipeline work over ``passes`` passes of the images:
    :func:`actors.face_batch.process_batch` on batches of ``batch`` images, each image as the job sends
    it (the largest face, its crop, no quality), in one process with the platform's threads."""
    from actors.face_batch import FaceRequest, process_batch
    from facecore.pipelines import open_pipeline

    pipeline = open_pipeline(settings.pipeline_config())
    requests = [FaceRequest(image=path.read_bytes(), det_prob_threshold=settings.det_prob_threshold, limit=1,
                            crops=True, quality=False) for path in paths]
    process_batch(pipeline, requests[:batch])  # warm-up
    faces = 0
    cpu_started = time.process_time()
    with Stopwatch() as watch:
        for _ in range(passes):
            for start in range(0, len(requests), batch):
                faces += sum(len(response.faces) for response in process_batch(pipeline, requests[start:start + batch]))
    images = passes * len(requests)
    return {"images": images, "images_per_s": images / watch.seconds, "faces_per_s": faces / watch.seconds,
            "cpu_ms_per_image": (time.process_time() - cpu_started) / images * 1000}


def private_mb(process: psutil.Process) -> float:
    """Memory private to the process, less its pages of Ray's shared-memory object store (``plasma``):
    those are the object store's, reported apart, and count as private only while no other process
    has touched them."""
    return sum(m.private_clean + m.private_dirty for m in process.memory_maps(grouped=True)
               if "plasma" not in m.path) / MB


def _role(process: psutil.Process) -> str | None:
    """Which part of the job a process is, from its Ray process title."""
    title = " ".join(process.cmdline()[:1])
    if "EmbedImages" in title:
        return "embedders"
    if "IndexShard" in title:
        return "shard"
    return None


class MemorySampler(threading.Thread):
    """Samples the private memory of the driver, the embedder actors and the shard every ``every_s``,
    and the CPU seconds of every process of this driver's tree (its Ray cluster), keeping each
    process's last reading (Ray Data's workers and actors may exit before the job ends)."""

    def __init__(self, processed: list[int], every_s: float = 2.0):
        super().__init__(daemon=True)
        self.processed = processed
        self.every_s = every_s
        self.samples: list[dict] = []
        self.done = threading.Event()
        self.cpu_before = cpu_seconds([os.getpid()])
        self.cpu_last = dict(self.cpu_before)
        self.own_cpu = 0.0  # CPU seconds of this thread, updated after every sample

    def cpu_spent(self) -> dict[str, float]:
        """CPU seconds per process role since the sampler was made, less the sampler's own (in the driver)."""
        self.cpu_last.update(cpu_seconds([os.getpid()]))
        spent = cpu_split(self.cpu_before, self.cpu_last)
        spent["python"] = spent.get("python", 0.0) - self.own_cpu
        return spent

    def run(self) -> None:
        import ray

        driver = psutil.Process()
        while not self.done.wait(self.every_s):
            processed = self.processed[0]
            self.cpu_last.update(cpu_seconds([os.getpid()]))
            sample = {"t": time.perf_counter(), "processed": processed,
                      "cpu": cpu_split(self.cpu_before, self.cpu_last), "sampler_cpu": time.thread_time(),
                      "driver_mb": private_mb(driver), "embedders_mb": 0.0, "shard_mb": 0.0}
            for process in process_trees([os.getpid()]):  # this run's cluster, not others beside it
                try:
                    role = _role(process)
                    if role:
                        sample[f"{role}_mb"] += private_mb(process)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            total, free = ray.cluster_resources(), ray.available_resources()
            sample["object_store_mb"] = (total.get("object_store_memory", 0) - free.get("object_store_memory", 0)) / MB
            self.samples.append(sample)
            self.own_cpu = time.thread_time()

    def steady_cpu(self, total: int) -> tuple[int, dict[str, float]]:
        """Inputs done and CPU seconds per role between the samples nearest 10% and 90% of the inputs;
        the sampler's own CPU (it runs in the driver) is taken out of the driver's."""
        first, last = self.at(0.1, total), self.at(0.9, total)
        spent = {role: seconds - first["cpu"].get(role, 0.0) for role, seconds in last["cpu"].items()}
        spent["python"] = spent.get("python", 0.0) - (last["sampler_cpu"] - first["sampler_cpu"])
        return last["processed"] - first["processed"], dict(sorted(spent.items(), key=lambda item: -item[1]))

    def at(self, fraction: float, total: int) -> dict:
        """The sample closest to ``fraction`` of the inputs processed."""
        return min(self.samples, key=lambda s: abs(s["processed"] - fraction * total))


def write_manifest(paths: list[Path], inputs: int, folder: Path) -> Path:
    manifest = folder / "manifest.parquet"
    rows = [paths[i % len(paths)] for i in range(inputs)]
    pq.write_table(pa.table({"path": [str(p) for p in rows], "subject": [p.parent.name for p in rows],
                             "face_id": [f"bench-{i:07d}" for i in range(inputs)]}), manifest)
    return manifest


def run_job(platform, service_id: int, manifest: Path, inputs: int) -> dict:
    """The bulk job in this process as its driver, with progress timing and memory samples."""
    from batch_jobs.enroll import EnrollSpec, run_enroll
    from batch_jobs.tracking import JobTracker
    from store.control import ControlPlane
    from store.jobs import JobStore

    processed = [0]
    progress: list[tuple[float, int]] = []

    def on_progress(done: int, total: int | None, counts: dict) -> None:
        processed[0] = done
        progress.append((time.perf_counter(), done))

    async def run():
        control = await ControlPlane.connect(platform.settings.postgres_dsn)
        try:
            service = await control.get_service(service_id)
            jobs = JobStore(control.pool)
            job = await jobs.create("enroll", service_id, str(manifest), "largest", {"manifest": True})
            async with JobTracker(jobs, job.id, on_progress) as tracker:
                return await run_enroll(platform.settings, control, tracker, service,
                                        EnrollSpec(str(manifest), manifest=True))
        finally:
            await control.close()

    import ray

    from batch_jobs.embedding import plan_pool

    plan = plan_pool(platform.settings, ray.cluster_resources(), ray.available_resources())
    sampler = MemorySampler(processed)
    sampler.start()
    with Stopwatch() as watch:
        result = asyncio.run(run())
    sampler.done.set()
    sampler.join()
    cpu = sampler.cpu_spent()
    steady_inputs, steady_cpu = sampler.steady_cpu(inputs)
    faces = result.counts.get("faces", 0)
    (t10, n10) = min(progress, key=lambda p: abs(p[1] - 0.1 * inputs))
    (t90, n90) = min(progress, key=lambda p: abs(p[1] - 0.9 * inputs))
    # at 95%, not 100%: Ray Data stops idle embedder actors while the last batches finish
    memory = {f"{int(f * 100)}%": sampler.at(f, inputs) for f in (0.25, 0.5, 0.75, 0.95)}
    return {"inputs": inputs, "plan": f"{plan.actors} embedder actor(s) x {plan.threads} thread(s)",
            "seconds": watch.seconds, "faces": faces, "counts": result.counts,
            "faces_per_s": faces / watch.seconds, "steady_images_per_s": (n90 - n10) / (t90 - t10),
            "memory": memory, "samples": sampler.samples, "cpu_seconds": cpu,
            "steady_inputs": steady_inputs, "steady_cpu_seconds": steady_cpu}


async def _add_faces(url: str, key: str, paths: list[Path], clients: int) -> float:
    """Images/s of one add-face call per image with ``clients`` concurrent callers."""
    from serve_app.client import AsyncFaceClient

    bodies = [(p.parent.name, p.read_bytes()) for p in paths]
    queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    async with AsyncFaceClient(url, api_key=key) as api:
        async def worker() -> None:
            while not queue.empty():
                subject, data = queue.get_nowait()
                await api.add_face(data, subject=subject)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return len(bodies) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=20_000, help="manifest rows (lfw-dev images cycled)")
    parser.add_argument("--http-images", type=int, default=522, help="images sent through add-face per run")
    parser.add_argument("--embedders", type=int, default=0, help="FACES_ENROLL_EMBEDDERS (0: sized to the cluster)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from faces_settings import Settings
    from serve_app.client import FaceClient
    from serve_app.platform import start_platform

    paths = lfw_images()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-enroll-") as folder:
        data_dir = Path(folder) / "data"
        models = Path("data/models").resolve()
        data_dir.mkdir()
        if models.is_dir():
            (data_dir / "models").symlink_to(models, target_is_directory=True)
        settings = Settings(data_dir=data_dir, port=free_port(), admin_token="bench",
                            enroll_embedders=args.embedders)
        before = ceiling(paths, settings, settings.enroll_batch_size)
        manifest = write_manifest(paths, args.inputs, Path(folder))
        platform = start_platform(settings, ray_init_options={"num_cpus": 2, "log_to_driver": False})
        try:
            admin = FaceClient(platform.url, admin_token="bench")
            application = admin.create_application("bench")
            bulk = admin.create_service(application["id"], "bulk", "recognition")
            job = run_job(platform, bulk["id"], manifest, args.inputs)
            http = {}
            for clients in (1, 8):
                key = admin.create_service(application["id"], f"http-{clients}", "recognition")["api_key"]
                http[clients] = asyncio.run(_add_faces(platform.url, key, paths[:args.http_images], clients))
        finally:
            platform.stop()
        after = ceiling(paths, settings, settings.enroll_batch_size)
    load_after = os.getloadavg()

    best = max(before["images_per_s"], after["images_per_s"])
    print(f"\n{args.inputs} inputs (lfw-dev's {len(paths)} images cycled), {os.cpu_count()} cores, "
          f"{job['plan']}; load average before {load_before[0]:.1f}, after {load_after[0]:.1f}\n")
    print_table(["path", "images/s", "faces/s", "share of the ceiling"], [
        ["the job's pipeline work alone (ceiling, before / after)",
         f"{before['images_per_s']:.1f} / {after['images_per_s']:.1f}",
         f"{before['faces_per_s']:.1f} / {after['faces_per_s']:.1f}", "1.00"],
        ["bulk job, end to end", job["faces"] / job["seconds"], job["faces_per_s"],
         job["faces_per_s"] / best],
        ["bulk job, steady state (10%-90%)", job["steady_images_per_s"], job["steady_images_per_s"],
         job["steady_images_per_s"] / best],
        ["HTTP add-face, 1 client", http[1], http[1], http[1] / best],
        ["HTTP add-face, 8 clients", http[8], http[8], http[8] / best],
    ])
    print()
    print_table(["inputs done", "driver MB", "embedders MB", "shard MB", "object store MB"], [
        [f"{sample['processed']} ({label})", sample["driver_mb"], sample["embedders_mb"], sample["shard_mb"],
         sample["object_store_mb"]] for label, sample in job["memory"].items()])
    ceiling_cpu = min(before["cpu_ms_per_image"], after["cpu_ms_per_image"])
    steady = max(job["steady_inputs"], 1)
    job_cpu = sum(job["cpu_seconds"].values()) * 1000 / args.inputs
    steady_cpu = sum(job["steady_cpu_seconds"].values()) * 1000 / steady
    print(f"\nCPU ms per input, every process of the Ray cluster and the driver (less the bench's sampler): "
          f"the ceiling's pipeline work {ceiling_cpu:.2f}; the job end to end {job_cpu:.2f} (ceiling / job "
          f"{ceiling_cpu / job_cpu:.3f}), in the steady state (10%-90%, {steady} inputs) {steady_cpu:.2f} "
          f"(ceiling / job {ceiling_cpu / steady_cpu:.3f}); by process:")
    roles = sorted(set(job["cpu_seconds"]) | set(job["steady_cpu_seconds"]), key=lambda r: -job["cpu_seconds"].get(r, 0))
    print_table(["process", "end to end, CPU s", "ms per input", "steady state, CPU s", "ms per input"], [
        [role, job["cpu_seconds"].get(role, 0.0), job["cpu_seconds"].get(role, 0.0) * 1000 / args.inputs,
         job["steady_cpu_seconds"].get(role, 0.0), job["steady_cpu_seconds"].get(role, 0.0) * 1000 / steady]
        for role in roles])
    print(f"\n{job['faces']} faces in {job['seconds']:.0f} s; counts {job['counts']}")
    results = {"inputs": args.inputs, "embedders": args.embedders, "ceiling_before": before, "ceiling_after": after,
               "job": {k: v for k, v in job.items()}, "http_images_per_s": http,
               "load_average": {"before": load_before, "after": load_after}}
    print(f"results: {save_results('enroll' if not args.embedders else f'enroll-{args.embedders}', results)}")


if __name__ == "__main__":
    main()
