"""The GPU path measured in one run: embedding, detection, facecore end to end, exact search, serving.

Sections (each one's failure is recorded in the JSON and the run goes on; the JSON is rewritten
after every section, so a run cut short keeps what it measured):

- ``environment``: torch, CUDA device, whether nvJPEG (torchvision) decodes;
- ``embedding``: SFace on the ``torch`` backend, faces/s at batch 64-512, fp16 and f32, chips
  already on the device (the model's own rate), and at batch 256 from host chips (copy included);
- ``detection``: YuNet images/s, batches of 640x640 and of 256x256 (lfw-sized) inputs on the device;
- ``end_to_end``: ``TorchFacePipeline.analyze`` on lfw-dev JPEG bytes (nvJPEG decode, detection,
  NMS, batched warps, quality, embedding), images/s with 1, 2, 4 and 8 processes sharing the GPU
  (what as many embedder replicas at a GPU fraction each do), with stage times;
- ``search``: exact top-10 over 1M and 10M synthetic 128-d unit vectors held in fp16 on the GPU
  (``faceindex.matrix_search.TorchMatrixSearch``), one query at a time: p50/p99 ms, upload time, and
  top-1 checked against an exact float32 search on the host for a few queries;
- ``serving`` and ``bulk_enrollment`` (only where ``ray`` imports; else "not measured: ray
  unavailable"): HTTP recognize requests/s with 1, 2 and 4 embedder replicas at 0.25 GPU, and a bulk
  enrollment job's images/s on the GPU actor pool.

    python bench/gpu.py [--device cuda] [--data .gpudata/lfw-dev] [--out $OUT/gpu.json] [--quick]

``--device cpu --quick`` runs every section at toy sizes on the CPU (a check that the script works).
A short table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import free_port, print_table  # noqa: E402

TOP_K = 10


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rate(run, device: str, seconds: float, warmup: int = 3) -> tuple[float, int]:
    """Calls per second of ``run()`` over about ``seconds`` (after ``warmup`` calls), and the calls."""
    for _ in range(warmup):
        run()
    _sync(device)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run()
        calls += 1
    _sync(device)
    return calls / (time.perf_counter() - started), calls


def lfw_paths(data: Path) -> list[Path]:
    root = data / "lfw-dev" if (data / "lfw-dev").is_dir() else data
    paths = sorted(root.glob("*/*.jpg"))
    if not paths:
        raise FileNotFoundError(f"no lfw-dev images (Name/Name_0001.jpg) under {data}")
    return paths


# ------------------------------------------------------------------------------------- sections

def environment(args) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": args.device,
            "cpu_count": os.cpu_count()}
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    from facecore.gpu_preprocess import _torchvision_decode_jpeg

    info["nvjpeg"] = bool(_torchvision_decode_jpeg()) and args.device.startswith("cuda")
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except Exception as exc:
        info["torchvision"] = f"unavailable: {exc}"
    return info


def embedding(args) -> dict:
    import torch

    from facecore.backends.torch_cuda import TorchGraph
    from facecore.models import SFACE, converted_model_path
    from facecore.torch_pipeline import TorchEmbedder

    path = converted_model_path(SFACE, args.cache)
    rows = []
    for precision in args.precisions:
        graph = TorchGraph(path, args.device, precision)
        for batch in args.embed_batches:
            chips = torch.randint(0, 256, (batch, 112, 112, 3), dtype=torch.uint8, device=args.device)
            rate, calls = _rate(lambda: graph.run_tensors({graph.input_names[0]: chips}), args.device, args.seconds)
            rows.append({"precision": precision, "batch": batch, "source": "device", "faces_per_s": rate * batch})
        embedder = TorchEmbedder(graph, SFACE, batch_size=max(args.embed_batches))
        host = np.random.default_rng(0).integers(0, 256, (max(args.embed_batches), 112, 112, 3), dtype=np.uint8)
        rate, _ = _rate(lambda: embedder.embed(host), args.device, args.seconds)
        rows.append({"precision": precision, "batch": len(host), "source": "host (copy, normalise, back)",
                     "faces_per_s": rate * len(host)})
        del graph, embedder
    return {"rows": rows, "best_faces_per_s": max(row["faces_per_s"] for row in rows)}


def detection(args) -> dict:
    import torch

    from facecore.backends.torch_cuda import TorchGraph
    from facecore.models import YUNET, converted_model_path

    precision = args.precisions[0]
    graph = TorchGraph(converted_model_path(YUNET, args.cache), args.device, precision)
    rows = []
    for side, batch in args.detect_shapes:
        images = torch.randint(0, 256, (batch, side, side, 3), dtype=torch.uint8, device=args.device)
        rate, _ = _rate(lambda: graph.run_tensors({graph.input_names[0]: images}), args.device, args.seconds)
        rows.append({"precision": precision, "input": f"{side}x{side}", "batch": batch, "images_per_s": rate * batch})
    return {"rows": rows}


def _e2e_worker(device, precision, cache, paths, batch, seconds, processes, barrier, results):
    """One process: a TorchFacePipeline over the images for ``seconds`` after a common start."""
    try:
        from facecore.pipeline import PipelineConfig, StageTimer
        from facecore.torch_pipeline import TorchFacePipeline

        if device.startswith("cuda"):  # processes share one card: each keeps to its part of its memory
            import torch

            torch.cuda.set_per_process_memory_fraction(0.9 / processes)
        pipeline = TorchFacePipeline(PipelineConfig(cache_dir=cache), device, precision)
        blobs = [Path(p).read_bytes() for p in paths]
        pipeline.analyze(blobs[:batch])
        pipeline.analyze(blobs[batch:2 * batch] or blobs[:batch])
        barrier.wait(timeout=300)
        timer, images, faces, position = StageTimer(), 0, 0, 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            chunk = [blobs[(position + i) % len(blobs)] for i in range(batch)]
            position += batch
            faces += sum(len(found) for found in pipeline.analyze(chunk, timer=timer))
            images += batch
        elapsed = time.perf_counter() - started
        results.put({"images": images, "faces": faces, "seconds": elapsed,
                     "stage_ms_per_image": {k: v / images for k, v in timer.stages.items()}})
    except Exception as exc:
        results.put({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]})
        barrier.abort()


def end_to_end(args) -> dict:
    import multiprocessing

    paths = [str(p) for p in lfw_paths(args.data)][:args.images]
    context = multiprocessing.get_context("spawn")
    rows = []
    for processes in args.processes:
        barrier, results = context.Barrier(processes), context.Queue()
        workers = [context.Process(target=_e2e_worker, args=(args.device, args.precisions[0], args.cache, paths,
                                                             args.e2e_batch, args.e2e_seconds, processes, barrier,
                                                             results))
                   for _ in range(processes)]
        for worker in workers:
            worker.start()
        parts = [results.get(timeout=240) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        errors = [part for part in parts if "error" in part]
        if errors:  # the rows measured so far stand; this one records why it has no figure
            rows.append({"processes": processes, "error": errors[0]["error"][:300]})
            continue
        images_per_s = sum(part["images"] / part["seconds"] for part in parts)
        rows.append({"processes": processes, "images_per_s": images_per_s,
                     "faces_per_s": sum(part["faces"] / part["seconds"] for part in parts),
                     "stage_ms_per_image": parts[0]["stage_ms_per_image"]})
    measured = [row["images_per_s"] for row in rows if "images_per_s" in row]
    return {"images": len(paths), "batch": args.e2e_batch, "precision": args.precisions[0], "rows": rows,
            "best_images_per_s": max(measured, default=0.0)}


def _unit_rows(rows: int, dim: int, seed: int) -> np.ndarray:
    """Random unit vectors, made with torch's threaded generator (fast at 10M rows)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    matrix = torch.empty((rows, dim), dtype=torch.float32)
    step = 1 << 20
    for start in range(0, rows, step):
        block = torch.randn((min(step, rows - start), dim), generator=generator)
        matrix[start:start + len(block)] = block / block.norm(dim=1, keepdim=True)
    return matrix.numpy()


def search(args) -> dict:
    from faceindex.matrix_search import NumpyMatrixSearch, TorchMatrixSearch

    rows = []
    for size in args.search_sizes:
        vectors = _unit_rows(size, 128, seed=size)
        rng = np.random.default_rng(1)
        targets = rng.choice(size, args.queries, replace=False)
        noise = rng.standard_normal((args.queries, 128)).astype(np.float32) * 0.03
        queries = vectors[targets] + noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        index = TorchMatrixSearch(args.device)
        started = time.perf_counter()
        index.top(queries[:1], vectors, TOP_K)  # uploads the matrix
        upload_s = time.perf_counter() - started
        for query in queries[:5]:  # warm-up
            index.top(query[None], vectors, TOP_K)
        latencies, found = [], []
        for query in queries:
            started = time.perf_counter()
            top_rows, _ = index.top(query[None], vectors, TOP_K)
            latencies.append((time.perf_counter() - started) * 1000)
            found.append(int(top_rows[0, 0]))
        checked = min(5, args.queries)
        exact, _ = NumpyMatrixSearch().top(queries[:checked], vectors, 1)
        batch = queries[:16]
        started = time.perf_counter()
        index.top(batch, vectors, TOP_K)
        batch_ms = (time.perf_counter() - started) * 1000
        rows.append({"faces": size, "dtype": "float16", "p50_ms": float(np.percentile(latencies, 50)),
                     "p99_ms": float(np.percentile(latencies, 99)), "queries": len(latencies),
                     "batch16_ms": batch_ms, "upload_s": upload_s,
                     "device_gb": index.memory_bytes() / 1e9,
                     "top1_equals_target": float(np.mean(np.asarray(found) == targets)),
                     "top1_equals_host_exact": f"{int((exact[:, 0] == np.asarray(found[:checked])).sum())}/{checked}"})
        del vectors, index
    return {"rows": rows}


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
        import serve_app  # noqa: F401
    except ImportError:
        return False
    return True


def serving(args) -> dict:
    if not _ray_available():
        return {"not_measured": "ray unavailable"}
    from bench.http_load import run_load
    from faces_settings import Settings
    from serve_app.client import FaceClient
    from serve_app.platform import start_platform

    paths = lfw_paths(args.data)
    people: dict[str, list[Path]] = {}
    for path in paths:
        people.setdefault(path.parent.name, []).append(path)
    rows = []
    gpu_fraction = 0.25 if args.device.startswith("cuda") else 0.0
    for replicas in args.replicas:
        with tempfile.TemporaryDirectory() as data_dir:
            (Path(data_dir) / "models").symlink_to(Path(args.cache).resolve(), target_is_directory=True)
            settings = Settings(data_dir=Path(data_dir), port=free_port(), admin_token="bench",
                                embedder_replicas=replicas, embedder_num_gpus=gpu_fraction,
                                batch_max_size=args.serve_batch)
            platform_ = start_platform(settings, ray_init_options={"log_to_driver": False})
            try:
                admin = FaceClient(platform_.url, admin_token="bench")
                application = admin.create_application("bench")
                service = admin.create_service(application["id"], "load", "recognition")
                admin.set_quotas(service["id"], requests_per_s=1e6)  # measure the platform, not its rate limit
                key = service["api_key"]
                client = FaceClient(platform_.url, api_key=key)
                for name, files in list(people.items())[:args.enroll_people]:
                    client.add_face(files[0].read_bytes(), subject=name)
                load = run_load(platform_.url, key, "/api/v1/recognition/recognize",
                                [({}, p.read_bytes()) for p in paths], args.clients, args.http_seconds)
            finally:
                platform_.stop()
        rows.append({"replicas": replicas, "num_gpus_each": gpu_fraction, "clients": args.clients,
                     "requests_per_s": load.requests_per_s, "p50_ms": load.p50_ms, "p99_ms": load.p99_ms})
    return {"rows": rows}


def bulk_enrollment(args) -> dict:
    if not _ray_available():
        return {"not_measured": "ray unavailable"}
    from bench.enroll import run_job, write_manifest
    from faces_settings import Settings
    from serve_app.client import FaceClient
    from serve_app.platform import start_platform

    paths = lfw_paths(args.data)
    with tempfile.TemporaryDirectory() as data_dir:
        (Path(data_dir) / "models").symlink_to(Path(args.cache).resolve(), target_is_directory=True)
        settings = Settings(data_dir=Path(data_dir), port=free_port(), admin_token="bench",
                            embedder_num_gpus=0.25 if args.device.startswith("cuda") else 0.0)
        platform_ = start_platform(settings, ray_init_options={"log_to_driver": False})
        try:
            admin = FaceClient(platform_.url, admin_token="bench")
            application = admin.create_application("bench")
            service = admin.create_service(application["id"], "bulk", "recognition")
            manifest = write_manifest(paths, args.enroll_inputs, Path(data_dir))
            result = run_job(platform_, service["id"], manifest, args.enroll_inputs)
        finally:
            platform_.stop()
    return {"inputs": result["inputs"], "plan": result["plan"], "seconds": result["seconds"],
            "images_per_s": result["inputs"] / result["seconds"], "steady_images_per_s": result["steady_images_per_s"],
            "faces": result["faces"]}


SECTIONS = [("environment", environment), ("embedding", embedding), ("detection", detection),
            ("end_to_end", end_to_end), ("search", search), ("serving", serving),
            ("bulk_enrollment", bulk_enrollment)]


# ---------------------------------------------------------------------------------------- report

def summary_rows(results: dict) -> list[list]:
    """The short table: one line per measured figure, then one per section that failed or was skipped."""
    def rows(section: str) -> list[dict]:
        return results.get(section, {}).get("rows", [])

    table = [[f"embedding {r['precision']} batch {r['batch']} ({r['source']})", "faces/s", r["faces_per_s"]]
             for r in rows("embedding")]
    table += [[f"detection {r['precision']} {r['input']} batch {r['batch']}", "images/s", r["images_per_s"]]
              for r in rows("detection")]
    table += [[f"facecore end to end, {r['processes']} process(es)", "images/s",
               r.get("images_per_s", f"error: {r.get('error', '?')[:80]}")] for r in rows("end_to_end")]
    table += [[f"exact search {r['faces']:,} faces fp16, p50 / p99", "ms",
               f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} (top-1 = host exact: {r['top1_equals_host_exact']})"]
              for r in rows("search")]
    table += [[f"HTTP recognize, {r['replicas']} replica(s) x {r['num_gpus_each']} GPU", "requests/s",
               r["requests_per_s"]] for r in rows("serving")]
    if "images_per_s" in results.get("bulk_enrollment", {}):
        table.append(["bulk enrollment", "images/s", results["bulk_enrollment"]["images_per_s"]])
    for section, _ in SECTIONS:
        value = results.get(section, {})
        if "error" in value:
            table.append([section, "-", "error: " + value["error"].splitlines()[0][:100]])
        elif "not_measured" in value:
            table.append([section, "-", "not measured: " + value["not_measured"]])
    return table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device: cuda (default) or cpu")
    parser.add_argument("--data", type=Path, default=None,
                        help="lfw-dev folder, or a folder holding it (default: .gpudata/lfw-dev, else "
                             "$FACES_TEST_DATA/lfw-dev, else ../shared/data/lfw-dev)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: $OUT/gpu.json, else "
                                                               "bench/results/gpu.json)")
    parser.add_argument("--cache", default=None, help="model cache folder (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="toy sizes: a check that every section runs")
    parser.add_argument("--sections", default=",".join(name for name, _ in SECTIONS),
                        help="comma-separated sections to run")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="sections not started within this many seconds are skipped (not with --quick)")
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    if args.data is None:
        candidates = [repo / ".gpudata" / "lfw-dev",
                      Path(os.environ.get("FACES_TEST_DATA", repo.parent / "shared" / "data")) / "lfw-dev"]
        args.data = next((c for c in candidates if c.is_dir()), candidates[-1])
    if args.out is None:
        args.out = Path(os.environ["OUT"]) / "gpu.json" if os.environ.get("OUT") else repo / "bench" / "results" / "gpu.json"
    if args.cache is None:
        args.cache = tempfile.mkdtemp(prefix="rayfaces-models-")
    full = not args.quick
    args.precisions = ["fp16", "f32"] if args.device.startswith("cuda") else ["f32"]
    args.embed_batches = [64, 128, 256, 512] if full else [4]
    args.detect_shapes = [(640, 32), (640, 64), (256, 256)] if full else [(256, 2)]
    args.seconds = 1.5 if full else 0.1
    args.images = 0 if full else 24
    args.e2e_batch = 256 if full else 8
    args.e2e_seconds = 12.0 if full else 1.0
    args.processes = [1, 2, 4, 8] if full else [1]
    args.search_sizes = [1_000_000, 10_000_000] if full else [20_000, 50_000]
    args.queries = 300 if full else 20
    args.replicas = [1, 2, 4] if full else [1]
    args.clients = 64 if full else 2
    args.http_seconds = 15.0 if full else 3.0
    args.serve_batch = 64 if full else 8
    args.enroll_people = 100 if full else 5
    args.enroll_inputs = 5000 if full else 40
    if args.images == 0:
        args.images = None
    if args.quick:
        args.budget_s = float("inf")
    return args


def _release_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    wanted = set(args.sections.split(","))
    results: dict = {"arguments": {k: str(v) for k, v in vars(args).items()}, "started": time.time()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for name, section in SECTIONS:
        if name not in wanted:
            continue
        if time.perf_counter() - started > args.budget_s:
            results[name] = {"not_measured": f"time budget of {args.budget_s:.0f} s spent"}
            continue
        section_started = time.perf_counter()
        try:
            results[name] = section(args)
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        results[name]["section_s"] = round(time.perf_counter() - section_started, 1)
        _release_device_memory(args.device)  # the end-to-end processes need what earlier sections cached
        args.out.write_text(json.dumps(results, indent=2, default=str))
        print(f"[{time.perf_counter() - started:6.1f} s] {name}: "
              f"{'error' if 'error' in results[name] else 'done'}", flush=True)
    results["total_s"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(results, indent=2, default=str))

    env = results.get("environment", {})
    print(f"\n{env.get('gpu', args.device)}, torch {env.get('torch', '?')}, nvJPEG {env.get('nvjpeg', '?')}; "
          f"{results['total_s']} s; JSON: {args.out}\n")
    print_table(["what", "unit", "value"], summary_rows(results))
    return results


if __name__ == "__main__":
    main()
