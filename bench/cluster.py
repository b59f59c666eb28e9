"""Cluster figures on one machine, with the data on a local S3 server (moto) or a real one.

1. Shard recovery from object storage: an IndexShard actor over N faces (table and saved approximate
   index on S3) is killed; seconds until it answers a search again and until it searches with its
   approximate index (table load plus saved index), and the same with no saved index (exact answers
   after the table load, then a rebuild), as the baseline. Each twice: with the local S3 server
   reading only the range of a ranged GET, as S3 does, and reading the whole object for each range,
   as moto does as shipped (tests/object_store.py).
2. Fail-over under load: the multi-node test (tests/test_multi_node.py: head and two workers, a worker
   SIGKILLed during an add-face load and during a recognize load); its failed requests and seconds
   until every shard answers again.
3. Bulk enrollment on one worker node vs two (`ray start --num-cpus=1` each, a head with no CPU):
   images/s of `faces enroll` (`python -m faces_cli.main enroll`) over the same images (lfw-dev,
   cycled beyond its 522), end to end and in the steady state (10%-90% of the inputs, from the job's
   recorded progress; and fitted through every step of it, which depends less on where the steps
   fall), and the ratios; when the first batch reached the driver; where the embedder
   actors and tasks ran; CPU ms per image of each node's processes, the driver, PostgreSQL and the S3
   server (this process), by role, over the whole job and in the steady state; the machine's idle
   share in the steady state. With the platform's settings and, as the baseline, those it had
   before (:data:`BEFORE`: batches of 64 images, blocks of 1 MiB), ``--repeats`` times, one node and
   two taking turns: one run's steady ratio varies by about 10% on a 2-core machine, so the medians
   are the figures.
4. Read availability during a primary kill: a one-shard service with ``--replicas`` members over
   ``--replica-faces`` faces on S3, searched by ``--clients`` concurrent callers through its
   ShardGroup while the primary's process is SIGKILLed; searches, failed and wrong answers, latency
   percentiles before and after the kill, the longest wait, and seconds until writes succeed again.

    python bench/cluster.py [--faces 1000000] [--images 6000] [--repeats 3] [--replica-faces 100000] [--skip-failover]
    python bench/cluster.py --faces 20000 --images 40 --repeats 1 --replica-faces 5000   # small, for a quick check
    python bench/cluster.py --only replicas --replica-faces 100000            # figure 4 alone
    python bench/cluster.py --only recovery-steps --faces 1000000             # figure 1's restart, step by step

Prints one table per figure and writes bench/results/cluster.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the suite's S3 server and Ray node helpers

from bench.common import lfw_images, print_table, save_results  # noqa: E402

DIM = 128
CHUNK = 100_000

# Figure 3's settings: the platform's, and (the baseline) those of bulk jobs before the batches and
# blocks grew.
BEFORE = {"FACES_ENROLL_BATCH_SIZE": "64", "FACES_JOB_BLOCK_BYTES": str(1 << 20)}
CONFIGS = {"platform": {}, "before": BEFORE}


def _vectors(count: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.normal(size=(count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _stored_vectors(count: int) -> np.ndarray:
    """The first ``count`` (<= CHUNK) embeddings that :func:`_fill` stores."""
    return _vectors(CHUNK, np.random.default_rng(0))[:count]


def _fill(uri: str, table: str, faces: int) -> None:
    """A table of ``faces`` random unit vectors, written in chunks."""
    from faceindex.config import SearchConfig
    from faceindex.shard import IndexShard
    from store.faces import FaceRecord

    shard = IndexShard(uri, table, DIM, SearchConfig(mode="exact", memory_budget_bytes=None))
    now = datetime.now(timezone.utc)
    rng = np.random.default_rng(0)
    for start in range(0, faces, CHUNK):
        count = min(CHUNK, faces - start)
        vectors = _vectors(CHUNK, rng)[:count]
        shard.add([FaceRecord(f"f{start + i}", f"s{(start + i) % 10_000}", vectors[i], "sface@bench", b"", None, now)
                   for i in range(count)])


def _pid(_actor) -> int:
    return os.getpid()


def shard_recovery(s3, faces: int) -> list[dict]:
    """Kill-to-serving seconds of a shard actor with its saved index on S3, and without one; each with
    the S3 server reading only the range of a ranged GET (as S3 does), then reading the whole object
    for each (moto as shipped: tests/object_store.py)."""
    import ray

    from faceindex.config import SearchConfig
    from faceindex.shard import IndexShard
    from object_store import read_ranges_only

    _fill(s3.uri("lancedb"), "recovery", faces)
    query = np.ones((1, DIM), dtype=np.float32) / np.sqrt(DIM)
    rows = []
    for saved in (True, False):
        index_dir = s3.uri("indexes" if saved else "no-saved-index")
        # auto from the first face: a restarted shard without a saved index rebuilds one at once
        search = SearchConfig(mode="auto", ann_min_faces=1, index_dir=index_dir if saved else None,
                              memory_budget_bytes=None)
        actor = ray.remote(IndexShard).options(max_restarts=-1, max_task_retries=-1, num_cpus=0,
                                               max_concurrency=4).remote(s3.uri("lancedb"), "recovery", DIM, search)
        ray.get(actor.build_index.remote())  # saves the index when index_dir is set
        for ranges_only in (True, False):
            read_ranges_only(ranges_only)
            pid = ray.get(actor.__ray_call__.remote(_pid))
            os.kill(pid, signal.SIGKILL)  # the process dies as in a crash; Ray restarts the actor
            killed = time.perf_counter()
            ray.get(actor.search_faces.remote(query, 1))
            answered = time.perf_counter() - killed
            assert ray.get(actor.__ray_call__.remote(_pid)) != pid
            while ray.get(actor.stats.remote())["search"] != "ann":  # without a saved index: exact until rebuilt
                time.sleep(0.1)
            rows.append({"faces": faces, "saved index": saved,
                         "S3 server's ranged GET": "reads the range" if ranges_only else "reads the whole object",
                         "kill to first answer s": round(answered, 1),
                         "kill to ann serving s": round(time.perf_counter() - killed, 1)})
        read_ranges_only(True)
        ray.kill(actor, no_restart=True)
    return rows


def recovery_steps(s3, faces: int) -> list[dict]:
    """Seconds of each step of a shard's restart from S3 in this process (no Ray), twice each."""
    from faceindex.ann_index import AnnIndex
    from faceindex.config import SearchConfig
    from faceindex.rows import ShardRows
    from faceindex.shard import IndexShard
    from store.faces import FaceTable
    from store.object_storage import join_uri, read_uri

    _fill(s3.uri("lancedb"), "steps", faces)
    search = SearchConfig(mode="ann", index_dir=s3.uri("indexes"), memory_budget_bytes=None)
    IndexShard(s3.uri("lancedb"), "steps", DIM, search).build_index()
    saved = join_uri(search.index_dir, "steps.ivf.npz")
    steps: list[dict] = []

    def timed(step: str, work, note: str = ""):
        started = time.perf_counter()
        result = work()
        steps.append({"faces": faces, "step": step, "s": round(time.perf_counter() - started, 2), "note": note})
        return result

    for _ in range(2):
        ids, subjects, vectors = timed("table scan (ids, subjects, embeddings)",
                                       FaceTable.open(s3.uri("lancedb"), "steps", DIM).scan_index_columns)
        rows = ShardRows(DIM)
        timed("rows in memory (id map, subject codes, norms)", lambda: rows.load(ids, subjects, vectors, "steps"))
        size = len(timed("saved index download", lambda: read_uri(saved)))
        steps[-1]["note"] = f"{size / 2**20:.1f} MiB"
        index = timed("saved index download and parse", lambda: AnnIndex.load(saved))
        same = timed("ids mapped: one comparison (rows in saved order)",
                     lambda: index.face_ids.equals(rows.ids[:len(index)]))
        steps[-1]["note"] = "applies" if same else "does not apply"
        timed("ids mapped: unpacked, one look-up each (otherwise)", lambda: rows.rows_now(index.face_ids.unpack()))
        del ids, subjects, vectors, rows, index
        timed("whole restart: IndexShard() until it searches",
              lambda: IndexShard(s3.uri("lancedb"), "steps", DIM, search))
    return steps


def read_availability(s3, faces: int, replicas: int, clients: int, seconds: float) -> dict:
    """Searches through a replicated shard group while its primary is SIGKILLed (figure 4)."""
    import ray

    from actors.index_shard import ShardGroup
    from faceindex.config import SearchConfig
    from faceindex.layout import ServiceLayout
    from store.faces import FaceRecord

    service = 990_004
    _fill(s3.uri("lancedb"), ServiceLayout(service, 1).table_name(0), faces)
    search = SearchConfig(mode="auto", ann_min_faces=min(faces, 100_000), index_dir=s3.uri("indexes"),
                          memory_budget_bytes=None)
    group = ShardGroup(service, 1, s3.uri("lancedb"), DIM, search, call_timeout_s=30, replicas=replicas)
    asyncio.run(group.build_indexes())  # the primary saves its index on S3; each replica builds its own
    queries = _stored_vectors(min(faces, 256))  # face f<i> is the best match of query i
    primary = group.actors[0]
    pid = ray.get(primary.__ray_call__.remote(_pid))
    calls: list[tuple[float, float, str]] = []  # (start, seconds, outcome)

    async def client(number: int, until: float) -> None:
        turn = number
        while time.perf_counter() < until:
            started = time.perf_counter()
            query = turn % len(queries)
            try:
                found = await group.search_subjects(queries[query][None, :], 1)
                outcome = "ok" if found[0][0][2] == f"f{query}" else "wrong"
            except Exception as error:  # noqa: BLE001 - counted as a failed search
                outcome = type(error).__name__
            calls.append((started, time.perf_counter() - started, outcome))
            turn += clients

    async def load() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(client(n, until) for n in range(clients)))

    killed_at = time.perf_counter() + seconds / 3
    threading.Timer(seconds / 3, os.kill, (pid, signal.SIGKILL)).start()
    asyncio.run(load())
    record = FaceRecord("after-kill", "after", queries[0] / np.linalg.norm(queries[0]), "sface@bench", b"", None,
                        datetime.now(timezone.utc))
    while True:  # writes wait for the primary: time until one succeeds
        try:
            asyncio.run(group.add([record]))
            break
        except Exception:  # noqa: BLE001 - the primary is still coming back
            time.sleep(0.2)
    writes_back = time.perf_counter() - killed_at
    stats = ray.get(primary.stats.remote())
    asyncio.run(group.drop())
    before = np.array([took for start, took, _ in calls if start < killed_at]) * 1000
    after = np.array([took for start, took, _ in calls if start >= killed_at]) * 1000
    failed = [outcome for _, _, outcome in calls if outcome not in ("ok", "wrong")]
    return {"faces": faces, "replicas": replicas, "clients": clients, "searches": len(calls),
            "failed": len(failed), "failures": sorted(set(failed)),
            "wrong": sum(outcome == "wrong" for _, _, outcome in calls),
            "p50 ms before": round(float(np.percentile(before, 50)), 1) if len(before) else None,
            "p99 ms before": round(float(np.percentile(before, 99)), 1) if len(before) else None,
            "p50 ms after kill": round(float(np.percentile(after, 50)), 1) if len(after) else None,
            "p99 ms after kill": round(float(np.percentile(after, 99)), 1) if len(after) else None,
            "longest ms": round(float(max(took for _, took, _ in calls)) * 1000, 1),
            "writes back s": round(writes_back, 1), "restarted primary search": stats["search"]}


def failover() -> list[str]:
    """The multi-node test's measured lines."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "own_cluster", "tests/test_multi_node.py", "-q", "-s",
                           "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("adds:", "recognize:"))]
    if done.returncode != 0:
        lines.append(f"the multi-node test failed:\n{done.stdout[-2000:]}")
    return lines


def _job_placement(dashboard_port: int, labels: dict[str, str]) -> dict:
    """Where the job ran: its embedder actors (node and CPUs reserved) and its tasks per node."""
    from ray.util.state import list_actors, list_tasks

    address = f"http://127.0.0.1:{dashboard_port}"
    actors = [actor for actor in list_actors(address=address, limit=1000, detail=True)
              if "MapWorker" in actor.class_name]
    tasks: dict[str, int] = {}
    for task in list_tasks(address=address, limit=10_000, detail=True):
        if task.type == "NORMAL_TASK":
            key = f"{task.name}@{labels.get(task.node_id, task.node_id)}"
            tasks[key] = tasks.get(key, 0) + 1
    return {"embedders": sorted(f"{labels.get(actor.node_id, actor.node_id)} "
                                f"{actor.required_resources.get('CPU', 0):g} CPU" for actor in actors),
            "tasks": dict(sorted(tasks.items()))}


def _cpu_table(spent: dict[str, dict[str, float]], images: int) -> dict[str, dict]:
    """Per process group: CPU ms per image in all and by its four largest roles."""
    return {group: {"ms/image": round(sum(roles.values()) / images * 1000, 1),
                    "top": {role: round(seconds / images * 1000, 1) for role, seconds in list(roles.items())[:4]}}
            for group, roles in spent.items()}


def _cpu_between(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """CPU seconds per group and role spent between two readings of :meth:`GroupCpu.sample`, largest first."""
    return {group: dict(sorted(((role, seconds - before.get(group, {}).get(role, 0.0))
                                for role, seconds in roles.items()), key=lambda item: -item[1]))
            for group, roles in after.items()}


async def _watch(job: subprocess.Popen, dsn: str, service_id: int, meter, every_s: float = 0.5) -> list[dict]:
    """Until the job's process ends: its progress (the job row's ``processed``) every ``every_s``, with
    a CPU reading of ``meter`` each time (processes that exit meanwhile still count) and of this
    process (the S3 server)."""
    import asyncpg

    marks = []
    connection = await asyncpg.connect(dsn)
    try:
        while job.poll() is None:
            row = await connection.fetchrow("SELECT processed, total FROM jobs WHERE service_id = $1 "
                                            "ORDER BY id DESC LIMIT 1", service_id)
            marks.append({"t": time.perf_counter(), "processed": row["processed"] if row else 0,
                          "total": row["total"] if row else None,
                          "cpu": meter.sample() | {"bench (S3 server)": {"python": time.process_time()}},
                          "machine": psutil.cpu_times()})
            await asyncio.sleep(every_s)
    finally:
        await connection.close()
    return marks


def _steady_window(marks: list[dict], images: int) -> tuple[dict, dict]:
    """The samples nearest 10% and 90% of the inputs done (the job's recorded progress, which moves by
    a batch or more at a time)."""
    return (min(marks, key=lambda mark: abs(mark["processed"] - 0.1 * images)),
            min(marks, key=lambda mark: abs(mark["processed"] - 0.9 * images)))


def _steady_state(marks: list[dict], images: int) -> dict:
    """The steady window (:func:`_steady_window`): images/s, CPU ms per image done per process group
    and by its largest roles, the sum of those, and the machine's idle share of its CPU time (all
    cores, every process)."""
    first, last = _steady_window(marks, images)
    done = last["processed"] - first["processed"]
    if done <= 0:
        return {"steady images/s": None, "steady cpu": None, "steady cpu ms/image": None, "steady machine idle": None}
    cpu = _cpu_table(_cpu_between(first["cpu"], last["cpu"]), done)
    machine = sum(last["machine"]) - sum(first["machine"])
    return {"steady images/s": done / (last["t"] - first["t"]), "steady cpu": cpu,
            "steady cpu ms/image": round(sum(group["ms/image"] for group in cpu.values()), 1),
            "steady machine idle": round((last["machine"].idle - first["machine"].idle) / machine, 3)}


def _fitted_rate(progress: list[tuple[float, int]], images: int) -> float | None:
    """Images/s of the least-squares line through the job's recorded progress, from the first batch
    to the last change before the end (the final flush). Progress moves by one or two embedder tasks
    at a time (about 500-1000 lfw photos) and is written at most once a second, so a rate from the
    two samples nearest 10% and 90% moves by up to a step at each end (5-10% with 6,000 images and
    two nodes); the line through every step does not hang on two of them."""
    steps = [(t, done) for t, done in progress if 0 < done < images]
    if len(steps) < 3:
        return None
    times, counts = zip(*steps)
    return float(np.polyfit(times, counts, 1)[0])


def _progress(marks: list[dict], started: float) -> list[tuple[float, int]]:
    """(seconds since the job's start, inputs done) at each change of the job's recorded progress."""
    changes = [mark for n, mark in enumerate(marks) if n == 0 or mark["processed"] != marks[n - 1]["processed"]]
    return [(round(mark["t"] - started, 1), mark["processed"]) for mark in changes]


def enrollment_rate(workers: int, config: str, s3, dsn: str, postgres_pid: int | None, photos: Path,
                    data_dir: Path) -> dict:
    """Images/s of a bulk job (with the settings of ``config``, see :data:`CONFIGS`) on a cluster of a
    CPU-less head and ``workers`` one-CPU workers, end to end
    and in the steady state (10%-90% of the inputs, from the job's recorded progress), and when its
    first batch reached the driver; where its embedder actors and tasks ran; the CPU spent per image by
    each node's processes, the job's driver, PostgreSQL and this process (the S3 server)."""
    from ray_nodes import head_node_id, ray_temp_dir, start_head, start_worker, wait_for_nodes

    import ray
    from bench.cpu_split import GroupCpu
    from store.control import ControlPlane

    run = f"enroll-{workers}-{time.time_ns()}"
    with ray_temp_dir() as ray_tmp, tempfile.TemporaryFile("w+") as output:  # a Ray folder of its own
        env = {**os.environ, **s3.environment, "RAY_AUTH_MODE": "disabled", "FACES_POSTGRES_DSN": dsn,
               "FACES_LANCEDB_URI": s3.uri(run, "lancedb"), "FACES_MEDIA_URI": s3.uri(run),
               "FACES_DATA_DIR": str(data_dir), **CONFIGS[config], **ray_tmp}
        head = start_head(env, num_cpus=0)
        nodes = [head]
        try:
            ray.init(address=head.address, log_to_driver=False)
            head.node_id = head_node_id()
            nodes += [start_worker(f"worker_{n}", env, head.address) for n in range(workers)]
            wait_for_nodes({node.label: node.node_id for node in nodes})  # and no node of a failed start

            async def create() -> int:
                control = await ControlPlane.connect(dsn)
                try:
                    application = await control.create_application(run)
                    service, _ = await control.create_service(application.id, "bulk", "recognition")
                    return service.id
                finally:
                    await control.close()

            service_id = asyncio.run(create())
            meter = GroupCpu({node.label: [node.process.pid] for node in nodes}
                             | ({"postgres": [postgres_pid]} if postgres_pid else {}))
            own_cpu = time.process_time()
            started = time.perf_counter()
            # The driver has the environment of a driver of `ray job submit` on this cluster: the head's
            # `ray start --disable-usage-stats` sets RAY_USAGE_STATS_ENABLED=0 for the processes it starts,
            # the Jobs API's drivers among them, and with it Ray Data starts no usage-collection actor on
            # the head (a worker process, about 1 s of CPU at a cluster's first job).
            job = subprocess.Popen([sys.executable, "-m", "faces_cli.main", "--verbose", "enroll", str(photos),
                                    "--service", str(service_id), "--quiet"],
                                   env={**env, "FACES_RAY_ADDRESS": head.address, "RAY_USAGE_STATS_ENABLED": "0"},
                                   stdout=output, stderr=subprocess.STDOUT, text=True)
            meter.add("driver", [job.pid])
            marks = asyncio.run(_watch(job, dsn, service_id, meter))
            seconds = time.perf_counter() - started
            progress = _progress(marks, started)
            spent = meter.sample()
            spent["bench (S3 server)"] = {"python": time.process_time() - own_cpu}
            output.seek(0)
            log = output.read()
            if job.returncode != 0:
                raise RuntimeError(log[-4000:])
            rate = re.search(r"\(([\d.]+) images/s\)", log)
            plan = re.search(r"job \d+: (\d+ embedder actor.*)", log)
            images = sum(1 for _ in photos.glob("*/*.jpg"))
            return {"settings": config, "worker nodes": workers, "images": images, "job s": seconds,
                    "images/s (job summary)": float(rate.group(1)) if rate else None,
                    "first batch s": next((round(mark["t"] - started, 1) for mark in marks if mark["processed"]), None),
                    **_steady_state(marks, images),
                    "cpu ms/image": round(sum(sum(roles.values()) for roles in spent.values()) / images * 1000, 1),
                    "pool": plan.group(1) if plan else None,
                    "cpu": _cpu_table(spent, images),  # the whole job, start-up included
                    "progress": progress, "fitted images/s": _fitted_rate(progress, images),
                    **_job_placement(head.dashboard_port, {node.node_id: node.label for node in nodes})}
        finally:
            ray.shutdown()
            for node in reversed(nodes):
                node.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000, help="faces of the recovered shard")
    parser.add_argument("--images", type=int, default=6000,
                        help="images of the bulk job (lfw-dev cycled beyond its 522)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting and node count (figure 3)")
    parser.add_argument("--skip-failover", action="store_true", help="leave out the multi-node test")
    parser.add_argument("--replica-faces", type=int, default=100_000, help="faces of the replicated shard (figure 4)")
    parser.add_argument("--replicas", type=int, default=2, help="members of the replicated shard (figure 4)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent searches during the kill (figure 4)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the search load (figure 4)")
    parser.add_argument("--only", choices=["recovery", "recovery-steps", "enrollment", "replicas", "failover"],
                        help="measure one figure only")
    args = parser.parse_args()
    wanted = {args.only} if args.only else {"recovery", "enrollment", "replicas"} | (
        set() if args.skip_failover else {"failover"})
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from object_store import s3_server

    results: dict = {}
    with s3_server() as s3, tempfile.TemporaryDirectory(prefix="faces-bench-cluster-") as work:
        os.chmod(work, 0o755)  # the embedded PostgreSQL runs as its own user
        if "recovery-steps" in wanted:  # in this process, no Ray
            results["recovery_steps"] = recovery_steps(s3, args.faces)
            print_table(list(results["recovery_steps"][0]), [list(row.values()) for row in results["recovery_steps"]])
        if wanted & {"recovery", "replicas"}:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                if "recovery" in wanted:
                    results["recovery"] = shard_recovery(s3, args.faces)
                    print_table(list(results["recovery"][0]), [list(row.values()) for row in results["recovery"]])
                if "replicas" in wanted:
                    results["read_availability"] = read_availability(s3, args.replica_faces, args.replicas,
                                                                     args.clients, args.seconds)
                    row = results["read_availability"]
                    print_table(list(row), [list(row.values())])
            finally:
                ray.shutdown()
        if "enrollment" in wanted:
            enrollment(args, s3, work, results)
    if "failover" in wanted:
        results["failover"] = failover()
        print("\n".join(results["failover"]))
    print(f"results: {save_results('cluster', results)}")


def _roles(cpu: dict | None) -> str:
    return ", ".join(f"{role} {ms}" for role, ms in cpu["top"].items()) if cpu else ""


def enrollment(args, s3, work: str, results: dict) -> None:
    """Figure 3: the bulk job on one worker node and on two, over ``--images`` images (lfw-dev cycled
    under distinct names beyond its 522: every input a new face), with each of :data:`CONFIGS`,
    ``--repeats`` times; the median steady ratio per setting."""
    from store.embedded_pg import resolve_dsn

    photos = Path(work) / "photos"
    sources = lfw_images()
    for n in range(args.images):
        image = sources[n % len(sources)]
        (photos / image.parent.name).mkdir(parents=True, exist_ok=True)
        (photos / image.parent.name / f"{n // len(sources)}-{image.name}").symlink_to(image)
    dsn, embedded = resolve_dsn(None, Path(work) / "data")
    rows = results["enrollment"] = []
    try:
        for _ in range(args.repeats):
            for config in CONFIGS:
                rows += [enrollment_rate(workers, config, s3, dsn, embedded.pid, photos, Path(work) / "data")
                         for workers in (1, 2)]
    finally:
        embedded.stop()
    shown = ["settings", "worker nodes", "images", "job s", "first batch s", "images/s (job summary)", "steady images/s",
             "fitted images/s",
             "cpu ms/image", "steady cpu ms/image", "steady machine idle"]
    print_table(shown, [[row[key] for key in shown] for row in rows])
    for row in rows[-2 * len(CONFIGS):]:  # the last repeat's
        print(f"{row['settings']} settings, {row['worker nodes']} worker node(s): {row['pool']}; embedders on "
              f"{row['embedders']}; tasks {row['tasks']}")
        steady = row["steady cpu"] or {}
        print_table(["process group", "cpu ms/image (whole job)", "largest roles (ms/image)", "cpu ms/image (steady)",
                     "largest roles, steady (ms/image)"],
                    [[group, cpu["ms/image"], _roles(cpu), steady.get(group, {}).get("ms/image"),
                      _roles(steady.get(group))] for group, cpu in row["cpu"].items()])
    results["enrollment_ratios"] = summary = [_ratios(config, [row for row in rows if row["settings"] == config])
                                              for config in CONFIGS]
    print_table(list(summary[0]), [list(line.values()) for line in summary])


def _ratios(config: str, rows: list[dict]) -> dict:
    """Two worker nodes against one with the settings of ``config``: each repeat's ratios, by the rate
    between the samples nearest 10% and 90% and by the fitted rate (:func:`_fitted_rate`), and the medians."""
    ones = [row for row in rows if row["worker nodes"] == 1]
    twos = [row for row in rows if row["worker nodes"] == 2]
    job = [one["job s"] / two["job s"] for one, two in zip(ones, twos)]
    summary = {"settings": config}
    for rate in ("steady images/s", "fitted images/s"):
        ratios = [two[rate] / one[rate] for one, two in zip(ones, twos) if one[rate] and two[rate]]
        summary |= {f"{rate}, 1 node (median)": round(statistics.median(row[rate] or 0 for row in ones)),
                    f"{rate}, 2 nodes (median)": round(statistics.median(row[rate] or 0 for row in twos)),
                    f"{rate} ratio per repeat": ", ".join(f"{ratio:.2f}" for ratio in ratios),
                    f"{rate} ratio (median)": round(statistics.median(ratios), 2) if ratios else None}
    return summary | {"job-time ratio (median)": round(statistics.median(job), 2)}


if __name__ == "__main__":
    main()
