"""Where the ingress HAProxy's and the raylet's memory goes, sampled while a load runs (bench/soak.py).

Attaches to the platform processes under ``--under PID`` (the soak's process: several platforms may
share a machine) and every ``--every`` seconds prints, per ``haproxy`` and ``raylet`` process, its RSS
and private memory (USS) split by mapping: ``heap`` (the brk heap: glibc's main arena), ``anon``
(anonymous mappings: other malloc arenas, thread stacks) and ``file`` (the binary and its libraries);
for HAProxy also its memory pools (``show pools`` on its stats socket: allocated, used) and its
request count, so growth per request can be told from pool caching (pools bounded by the peak).

    python bench/soak.py --minutes 8 --fraction 0.5 --warmup-minutes 3 --sample-seconds 30 &
    python bench/haproxy_memory.py --under $! --every 20
"""

from __future__ import annotations

import argparse
import re
import socket
import time
from pathlib import Path

import psutil

WATCHED = ("haproxy", "raylet")
_POOLS_TOTAL = re.compile(r"Total: \d+ pools, (\d+) bytes allocated, (\d+) used")


def stats_command(socket_path: str, command: str) -> str:
    """One command on HAProxy's stats socket; its whole answer."""
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(5)
        connection.connect(socket_path)
        connection.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def mapping_kb(pid: int) -> dict[str, int]:
    """Resident KB of a process by kind of mapping: heap, anon, file."""
    kinds = {"heap": 0, "anon": 0, "file": 0}
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            name = fields[5] if len(fields) > 5 else ""
            kind = "heap" if name == "[heap]" else "file" if name.startswith("/") else "anon"
        elif fields[0] == "Rss:":
            kinds[kind] += int(fields[1])
    return kinds


def process_memory(process: psutil.Process) -> dict[str, float]:
    """MB of a process: RSS, private (USS), and resident by kind of mapping (heap, anon, file)."""
    memory = process.memory_full_info()
    return {"rss": memory.rss / 2**20, "private": memory.uss / 2**20,
            **{kind: kb / 1024 for kind, kb in mapping_kb(process.pid).items()}}


def haproxy_counters(process: psutil.Process) -> dict[str, float]:
    """Pools (MB allocated, used) and requests so far, from the stats socket its config names."""
    arguments = process.cmdline()
    config = Path(arguments[arguments.index("-f") + 1]).read_text()
    socket_path = re.search(r"^\s*stats socket (\S+)", config, re.MULTILINE).group(1)
    allocated, used = map(int, _POOLS_TOTAL.search(stats_command(socket_path, "show pools")).groups())
    info = dict(line.split(": ", 1) for line in stats_command(socket_path, "show info").splitlines() if ": " in line)
    return {"pools_mb": allocated / 2**20, "pools_used_mb": used / 2**20, "requests": int(info["CumReq"])}


def sample(root: psutil.Process) -> list[str]:
    lines = []
    for process in root.children(recursive=True):
        try:
            if process.name() not in WATCHED:
                continue
            memory = process_memory(process)
            line = (f"{process.name()} {process.pid}: RSS {memory['rss']:.2f} MB, private {memory['private']:.2f}"
                    f" (heap {memory['heap']:.2f}, anon {memory['anon']:.2f}, file {memory['file']:.2f})")
            if process.name() == "haproxy":
                counters = haproxy_counters(process)
                line += (f"; pools {counters['pools_mb']:.2f} MB allocated, {counters['pools_used_mb']:.2f} used;"
                         f" {counters['requests']} requests")
            lines.append(line)
        except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError, ProcessLookupError, OSError):
            continue
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--under", type=int, required=True, help="process whose descendants are watched")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples (default 30)")
    args = parser.parse_args()
    root = psutil.Process(args.under)
    started = time.monotonic()
    while root.is_running():
        for line in sample(root):
            print(f"{(time.monotonic() - started) / 60:6.2f} min  {line}", flush=True)
        time.sleep(args.every)


if __name__ == "__main__":
    main()
