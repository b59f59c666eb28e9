"""Soak: a recognize/add/delete/list mix at a fraction of the measured peak, for minutes, watching memory.

Starts the platform as `faces serve` does (embedded PostgreSQL, local Ray, Serve, loopback only),
enrolls one photo of each lfw-dev person, then:

1. measures the peak: ``--clients`` clients send the mix as fast as they can for ``--peak-seconds``;
2. runs the mix at ``--fraction`` of that rate (paced) for ``--minutes``, and every
   ``--sample-seconds`` records the RSS and the private memory (USS) of every platform process
   (ingress replicas, embedder, index shards, Serve's proxy and controller, the other Ray processes,
   PostgreSQL's backends and its server processes apart, and PostgreSQL in all as PSS: its shared
   buffers counted once) and PostgreSQL's connections (pg_stat_activity: how many, held by which application,
   how many opened since; and the server's max_connections);
3. ends the warm-up (``--warmup-minutes``) with a PostgreSQL ``CHECKPOINT`` (:func:`checkpoint`: the
   checkpointer's first touch of the dirtied shared buffers falls inside the warm-up);
4. reports the answers by status (zero 5xx expected), memory per process role with its growth from
   the first sample after the warm-up (< 5% expected) to the end, and the connections over time.

One cycle of a client: add a face, recognize 6 photos, list a page of faces, delete the face it
added, so the gallery keeps its size. The load runs in a process of its own and stops by itself.

    python bench/soak.py [--minutes 30] [--fraction 0.8] [--clients 6] [--peak-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, save_results  # noqa: E402
from bench.cpu_split import process_role  # noqa: E402
from bench.http_load import build_bodyless, build_request, read_response  # noqa: E402
from bench.serve_load import bench_platform, lfw_people  # noqa: E402

RECOGNIZE_PER_CYCLE = 6
GROWTH_TARGET = 0.05


async def _mix(url: str, key: str, adds: list[tuple[str, bytes]], probes: list[bytes], clients: int,
               seconds: float, rate: float | None) -> dict:
    """``clients`` clients cycling add / recognize x6 / list / delete; ``rate``: requests/s in all
    (paced), None: as fast as they go. Answers counted by ``"<endpoint> <status>"``."""
    parts = urlsplit(url)
    host = parts.netloc
    recognize = [build_request(host, "/api/v1/recognition/recognize", {}, key, image) for image in probes]
    add = [build_request(host, "/api/v1/recognition/faces", {"subject": subject}, key, image)
           for subject, image in adds]
    listing = build_bodyless("GET", host, "/api/v1/recognition/faces", key, {"page": 0, "size": 20})
    counts: Counter[str] = Counter()
    interval = clients / rate if rate else 0.0
    deadline = time.monotonic() + seconds

    async def client(number: int) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        due, turn = time.monotonic() + interval * number / clients, number

        async def send(name: str, request: bytes) -> tuple[int, bytes]:
            nonlocal due
            if interval:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                due = max(due + interval, time.monotonic() - interval)
            writer.write(request)
            status, body = await read_response(reader)
            counts[f"{name} {status}"] += 1
            return status, body

        try:
            while time.monotonic() < deadline:
                status, body = await send("add", add[turn % len(add)])
                face = json.loads(body).get("image_id") if status == 200 else None
                for step in range(RECOGNIZE_PER_CYCLE):
                    await send("recognize", recognize[(turn * RECOGNIZE_PER_CYCLE + step) % len(recognize)])
                await send("list", listing)
                if face:
                    await send("delete", build_bodyless("DELETE", host, f"/api/v1/recognition/faces/{face}", key))
                turn += clients
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"counts": dict(counts), "seconds": time.monotonic() - started}


def _mix_process(queue, *args) -> None:
    try:
        queue.put(asyncio.run(_mix(*args)))
    except Exception as exc:  # the platform stopped answering: report it rather than hang the benchmark
        queue.put({"error": repr(exc)})


def start_mix(*args) -> tuple[multiprocessing.Process, multiprocessing.Queue]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_mix_process, args=(queue, *args), daemon=True)
    process.start()
    return process, queue


def platform_processes(pgdata: Path) -> list[psutil.Process]:
    """Every process of the platform this benchmark started: its own children (Ray and what Ray
    runs) and the PostgreSQL server of the data dir with its backends."""
    processes = psutil.Process().children(recursive=True)
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    return [*processes, postmaster, *postmaster.children(recursive=True)]


def postgres_role(process: psutil.Process) -> str:
    """``PostgreSQL backends`` (one process per client connection) or ``PostgreSQL server`` (the
    postmaster and its own processes: checkpointer, background writer, WAL writer, autovacuum...).
    The checkpointer's RSS climbs as it writes shared buffers out, without a byte more in use."""
    title = " ".join(process.cmdline())
    if not title.startswith("postgres: "):
        return "PostgreSQL server"  # the postmaster
    kind = title[len("postgres: "):]
    return "PostgreSQL server" if kind.startswith(_POSTGRES_SERVER_PROCESSES) else "PostgreSQL backends"


_POSTGRES_SERVER_PROCESSES = ("checkpointer", "background writer", "walwriter", "autovacuum", "logical replication",
                              "archiver", "stats collector", "startup", "io worker", "walsummarizer")


def memory_by_role(pgdata: Path, load_pid: int | None) -> dict[str, dict[str, float]]:
    """MB of memory per process role (the load generator left out): ``rss`` (resident, shared pages
    included), ``private`` (USS: pages no other process maps) and ``pss`` (shared pages divided among the
    processes that map them: summed over processes, each page counts once). PostgreSQL's backends count in their
    RSS every page of the shared buffers they have touched, so its RSS sum climbs towards
    ``shared_buffers`` times the backends without a byte more in use: its private memory tells a leak."""
    totals: dict[str, dict[str, float]] = {}
    for process in platform_processes(pgdata):
        if process.pid == load_pid:
            continue
        try:
            role = postgres_role(process) if process.name() == "postgres" else process_role(process)
            memory = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        role_totals = totals.setdefault(role, {"rss": 0.0, "private": 0.0, "pss": 0.0})
        role_totals["rss"] += memory.rss / 2**20
        role_totals["private"] += memory.uss / 2**20
        role_totals["pss"] += memory.pss / 2**20
    return dict(sorted(totals.items()))


async def checkpoint(dsn: str) -> None:
    """Have PostgreSQL write every dirty shared buffer out now (``CHECKPOINT``, as a superuser).

    A checkpoint comes every ``checkpoint_timeout`` (5 minutes): the first one makes the checkpointer
    touch every shared buffer the load dirtied, which then counts in its RSS (and in PostgreSQL's
    PSS where it was the only process to map them), a one-time step within ``shared_buffers`` and
    not growth. Forced at the end of the warm-up, that step falls inside the warm-up wherever the
    timer would have put it; checkpoints after it still run on their timer during the soak.
    """
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


async def postgres_backends(dsn: str) -> tuple[dict[int, str], int, int]:
    """PostgreSQL's client backends (this query's own left out): process id -> the application that
    holds the connection (``application_name``); the server's ``max_connections``; and how many
    checkpoints it has made since it started (timed and requested)."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT pid, application_name FROM pg_stat_activity "
                                      "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")
        limit = int(await connection.fetchval("SHOW max_connections"))
        version = int(await connection.fetchval("SHOW server_version_num"))
        checkpoints = await connection.fetchval(  # PostgreSQL 17 moved them to pg_stat_checkpointer
            "SELECT num_timed + num_requested FROM pg_stat_checkpointer" if version >= 170000
            else "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        return {row["pid"]: row["application_name"] or "?" for row in rows}, limit, int(checkpoints)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    parser.add_argument("--fraction", type=float, default=0.8, help="of the measured peak (default 0.8)")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--peak-seconds", type=float, default=30.0)
    parser.add_argument("--sample-seconds", type=float, default=60.0, help="between memory samples (default 60)")
    parser.add_argument("--warmup-minutes", type=float, default=None,
                        help="growth is measured from the first sample after this (default: a quarter, at most 5)")
    parser.add_argument("--port", type=int, default=0, help="HTTP port of the platform (default: a free one)")
    args = parser.parse_args()
    if not args.port:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            args.port = probe.getsockname()[1]
    warmup = args.warmup_minutes if args.warmup_minutes is not None else min(5.0, args.minutes / 4)

    people = lfw_people()
    probes = [path.read_bytes() for files in people.values() for path in files[1:3]]
    adds = [(f"soak {name}", files[0].read_bytes()) for name, files in people.items()]
    with bench_platform(args.port) as (platform, key):
        from serve_app.client import FaceClient

        pgdata = platform.settings.data_dir / "postgres"
        with FaceClient(platform.url, api_key=key) as api:
            for name, files in people.items():
                api.add_face(files[0], subject=name)

        peak_process, peak_queue = start_mix(platform.url, key, adds, probes, args.clients, args.peak_seconds, None)
        peak = peak_queue.get(timeout=args.peak_seconds + 300)
        peak_process.join()
        peak_rate = sum(peak["counts"].values()) / peak["seconds"]
        target = args.fraction * peak_rate
        print(f"peak: {peak_rate:.1f} requests/s ({args.clients} clients); soak at {target:.1f} requests/s "
              f"for {args.minutes:g} min", flush=True)

        seconds = args.minutes * 60
        soak_process, soak_queue = start_mix(platform.url, key, adds, probes, args.clients, seconds, target)
        started = time.monotonic()
        samples: list[dict] = []
        seen_backends: set[int] = set()
        print("  minute, PostgreSQL connections (+ opened since the last sample), MB per process: RSS/private")
        checkpointed_at = None
        while True:
            elapsed = time.monotonic() - started
            if checkpointed_at is None and elapsed >= warmup * 60:
                asyncio.run(checkpoint(platform.settings.postgres_dsn))
                checkpointed_at = round(elapsed / 60, 2)
                print(f"  {checkpointed_at:6.2f} min  end of the warm-up: CHECKPOINT", flush=True)
            memory = memory_by_role(pgdata, soak_process.pid)
            backends, max_connections, checkpoints = asyncio.run(postgres_backends(platform.settings.postgres_dsn))
            sample = {"minute": round(elapsed / 60, 2),
                      "rss_mb": {role: round(mb["rss"], 1) for role, mb in memory.items()},
                      "private_mb": {role: round(mb["private"], 1) for role, mb in memory.items()},
                      # PostgreSQL in all, each shared page counted once (PSS summed over its processes)
                      "postgres_pss_mb": round(sum(mb["pss"] for role, mb in memory.items()
                                                   if role.startswith("PostgreSQL")), 1),
                      "postgres_connections": len(backends),
                      "postgres_by_application": dict(Counter(backends.values())),
                      "postgres_max_connections": max_connections,
                      "postgres_checkpoints": checkpoints,
                      # connections opened since the previous sample (churn: each costs PostgreSQL a process)
                      "postgres_new_connections": len(set(backends) - seen_backends) if samples else 0}
            seen_backends = set(backends)
            samples.append(sample)
            print(f"  {sample['minute']:6.2f} min  connections {sample['postgres_connections']:3d} "
                  f"(+{sample['postgres_new_connections']})  "
                  + "  ".join(f"{role} {mb['rss']:.0f}/{mb['private']:.0f}" for role, mb in memory.items()),
                  flush=True)
            if elapsed >= seconds or not soak_process.is_alive():
                break
            soak_process.join(timeout=min(args.sample_seconds, seconds - elapsed + 1))
        soak = soak_queue.get(timeout=300)
        soak_process.join(timeout=60)
    for run in (peak, soak):
        if "error" in run:
            raise SystemExit(f"the load stopped: {run['error']}")

    report(args, peak_rate, target, soak, samples, warmup, checkpointed_at)


def memory_growth(first: dict[str, float], last: dict[str, float]) -> dict[str, float]:
    """Growth from ``first`` to ``last`` per process role (fractions)."""
    return {role: (last.get(role, 0.0) - mb) / mb for role, mb in first.items() if mb}


def report(args, peak_rate: float, target: float, soak: dict, samples: list[dict], warmup: float,
           checkpointed_at: float | None) -> None:
    counts = Counter(soak["counts"])
    by_status = Counter()
    for name, n in counts.items():
        by_status[name.rsplit(" ", 1)[1]] += n
    errors = sum(n for status, n in by_status.items() if status.startswith("5"))
    print(f"\nsoak: {args.minutes:g} min at {target:.1f} requests/s ({args.fraction:.0%} of the peak "
          f"{peak_rate:.1f}), {sum(counts.values())} requests, {errors} answered 5xx\n")
    print_table(["request", "status", "count"], [[*name.rsplit(" ", 1), n] for name, n in sorted(counts.items())])

    after_warmup = [s for s in samples if s["minute"] >= warmup] or samples[-1:]
    first, last = after_warmup[0], samples[-1]
    growth = {kind: memory_growth(first[kind], last[kind]) for kind in ("rss_mb", "private_mb")}
    checkpoint_note = (f", PostgreSQL's CHECKPOINT at minute {checkpointed_at:g}" if checkpointed_at is not None
                       else ", no CHECKPOINT (the soak ended within the warm-up)")
    print(f"\nMemory (MB) per process role, from minute {first['minute']:g} (after the warm-up{checkpoint_note}) to "
          f"{last['minute']:g}; private: USS (PostgreSQL's RSS counts the shared buffers its backends touched)\n")
    roles = sorted(set(first["rss_mb"]) | set(last["rss_mb"]))
    print_table(["process", "RSS after warm-up", "RSS end", "RSS growth", "private after warm-up", "private end",
                 "private growth", f"< {GROWTH_TARGET:.0%}"],
                [[role, first["rss_mb"].get(role, 0.0), last["rss_mb"].get(role, 0.0),
                  f"{growth['rss_mb'].get(role, 0):+.1%}", first["private_mb"].get(role, 0.0),
                  last["private_mb"].get(role, 0.0), f"{growth['private_mb'].get(role, 0):+.1%}",
                  "yes" if max(growth["rss_mb"].get(role, 0), growth["private_mb"].get(role, 0)) < GROWTH_TARGET
                  else "NO"] for role in roles])
    postgres = (first["postgres_pss_mb"], last["postgres_pss_mb"])
    postgres_growth = (postgres[1] - postgres[0]) / postgres[0]
    print(f"\nPostgreSQL in all (PSS summed over its processes: the shared buffers counted once, not once per "
          f"process that touched them; they fill up to shared_buffers): {postgres[0]:g} -> {postgres[1]:g} MB "
          f"({postgres_growth:+.1%}, < {GROWTH_TARGET:.0%}: {'yes' if postgres_growth < GROWTH_TARGET else 'NO'}); "
          f"{last['postgres_checkpoints'] - first['postgres_checkpoints']} checkpoint(s) made in that window "
          f"(they come every checkpoint_timeout)")
    connections = [s["postgres_connections"] for s in samples]
    opened = sum(s["postgres_new_connections"] for s in samples)
    holders = ", ".join(f"{name} {n}" for name, n in sorted(samples[-1]["postgres_by_application"].items()))
    print(f"\nPostgreSQL connections: min {min(connections)}, max {max(connections)}, last {connections[-1]} "
          f"({holders}; the server allows {samples[-1]['postgres_max_connections']}); {opened} opened during the soak")
    results = {"minutes": args.minutes, "clients": args.clients, "fraction": args.fraction, "peak_rps": peak_rate,
               "target_rps": target, "achieved_rps": sum(counts.values()) / soak["seconds"],
               "counts": dict(counts), "by_status": dict(by_status), "errors_5xx": errors,
               "warmup_minutes": warmup, "checkpoint_minute": checkpointed_at, "rss_growth": growth["rss_mb"],
               "private_growth": growth["private_mb"],
               "postgres_pss_growth": postgres_growth, "postgres_connections_opened": opened, "samples": samples}
    print(f"results: {save_results('soak', results)}")


if __name__ == "__main__":
    main()
