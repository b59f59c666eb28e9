"""The head node's raylet memory over time on an idle cluster: does it grow with nothing to do?

Starts a local Ray head as the platform does (``num_cpus=2``, no dashboard) in one of two shapes:
``bare`` (Ray alone) or ``platform`` (the whole platform with Serve, as ``faces serve`` starts it, on
a temporary data dir and a free port, idle), with the
environment given by ``--env NAME=VALUE`` set before Ray starts. Then every ``--every`` seconds it
prints the raylet's RSS and private memory (USS) split by mapping (``heap``, ``anon``: jemalloc's
and other anonymous mappings, ``file``: the raylet's binary, private only while no other raylet of
the same installation runs), and at the end the growth from the first sample after
``--warmup-minutes`` to the last. ``bare`` starts Ray with its defaults, ``platform``
with the platform's (its raylet without jemalloc's thread caches, ``RAYLET_ALLOCATOR_ENV``).

    python bench/raylet_memory.py --shape platform --minutes 15 --every 30
    python bench/raylet_memory.py --shape bare --minutes 15 \
        --env RAY_JEMALLOC_CONF=tcache:false --env RAY_JEMALLOC_PROFILE=raylet
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

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import free_port  # noqa: E402
from bench.haproxy_memory import process_memory  # noqa: E402


@contextmanager
def cluster(shape: str, temp_dir: str) -> Iterator[None]:
    """A local Ray head of ``shape``, torn down on exit."""
    import ray

    if shape == "platform":
        from bench.serve_load import bench_platform

        with bench_platform(free_port()):
            yield
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    try:
        yield
    finally:
        ray.shutdown()


def raylet() -> psutil.Process:
    """This driver's raylet (Ray starts it as a child of the driver)."""
    for process in psutil.Process().children(recursive=True):
        if process.name() == "raylet":
            return process
    raise RuntimeError("no raylet under this process")


def sample(process: psutil.Process) -> dict[str, float]:
    return {**process_memory(process), "threads": process.num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("bare", "platform"), default="bare")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples (default 30)")
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set before Ray starts (repeatable)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    for assignment in args.env:
        name, _, value = assignment.partition("=")
        os.environ[name] = value
    with tempfile.TemporaryDirectory(prefix="rl-") as temp_dir, cluster(args.shape, temp_dir):
        process = raylet()
        print(f"shape {args.shape}, env {args.env or 'default'}, raylet {process.pid} with"
              f" MALLOC_CONF={process.environ().get('MALLOC_CONF', '')!r}", flush=True)
        started = time.monotonic()
        baseline = None
        while (elapsed := (time.monotonic() - started) / 60) <= args.minutes:
            memory = sample(process)
            if baseline is None and elapsed >= args.warmup_minutes:
                baseline = memory
            print(f"{elapsed:6.2f} min  RSS {memory['rss']:.2f} MB, private {memory['private']:.2f}"
                  f" (heap {memory['heap']:.2f}, anon {memory['anon']:.2f}, file {memory['file']:.2f}),"
                  f" {memory['threads']} threads", flush=True)
            time.sleep(args.every)
        if baseline is not None:
            print(f"growth after the warm-up: RSS {memory['rss'] - baseline['rss']:+.2f} MB"
                  f" ({(memory['rss'] / baseline['rss'] - 1) * 100:+.1f}%), private"
                  f" {memory['private'] - baseline['private']:+.2f} MB"
                  f" ({(memory['private'] / baseline['private'] - 1) * 100:+.1f}%), anon"
                  f" {memory['anon'] - baseline['anon']:+.2f} MB", flush=True)


if __name__ == "__main__":
    main()
