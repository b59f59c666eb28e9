"""Where a benchmark's CPU goes: CPU seconds per process over an interval, grouped by role."""

from __future__ import annotations

import psutil


def process_role(process: psutil.Process) -> str:
    """``ray::ServeReplica:faces:Embedder`` -> ``Embedder``; other Ray workers by class; else the name."""
    title = " ".join(process.cmdline()[:1]) or process.name()
    if title.startswith("ray::"):
        return title[5:].split(":")[-1].split(".")[0] or "ray worker"
    return process.name()


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Per live process: its role and CPU seconds (user + system) so far."""
    seen = {}
    for process in psutil.process_iter():
        try:
            times = process.cpu_times()
            seen[process.pid] = (process_role(process), times.user + times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return seen


def cpu_split(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two :func:`cpu_seconds` readings, per role, largest first."""
    spent: dict[str, float] = {}
    for pid, (role, seconds) in after.items():
        spent[role] = spent.get(role, 0.0) + seconds - before.get(pid, (role, 0.0))[1]
    return dict(sorted(((role, s) for role, s in spent.items() if s >= 0.005), key=lambda item: -item[1]))
