"""Where a benchmark's CPU goes: CPU seconds per process over an interval, grouped by role."""

from __future__ import annotations

import psutil


def process_role(process: psutil.Process) -> str:
    """``ray::ServeReplica:faces:Embedder`` -> ``Embedder``; other Ray workers by class; else the name."""
    title = " ".join(process.cmdline()[:1]) or process.name()
    if title.startswith("ray::"):
        return title[5:].split(":")[-1].split(".")[0] or "ray worker"
    return process.name()


def process_trees(roots: list[int]) -> list[psutil.Process]:
    """The processes ``roots`` and all their descendants (the machine may run other clusters beside)."""
    found: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            found.update({p.pid: p for p in [root, *root.children(recursive=True)]})
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def cpu_seconds(roots: list[int] | None = None) -> dict[int, tuple[str, float]]:
    """Per live process (every one of the machine, or those of the trees of ``roots``): its role and
    CPU seconds (user + system) so far."""
    seen = {}
    for process in psutil.process_iter() if roots is None else process_trees(roots):
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


class GroupCpu:
    """CPU seconds per group of process trees (a group: the trees of its root pids, e.g. one Ray node
    started with ``ray start``) since it was made, by role. Call :meth:`sample` often (every second or
    so): the CPU a process spent since its last reading counts for the role it has now, so a Ray
    worker's time goes to the tasks and actors it ran rather than all to its last title (a worker that
    ran read tasks and waits again is ``IDLE``), and processes that exit meanwhile (Ray Data's workers
    and actors) still count. Groups added later (a driver started after it) count from zero."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = dict(groups)
        self.seen = {group: cpu_seconds(roots) for group, roots in self.groups.items()}
        self.spent: dict[str, dict[str, float]] = {group: {} for group in self.groups}

    def add(self, group: str, roots: list[int]) -> None:
        self.groups[group] = roots
        self.seen[group], self.spent[group] = {}, {}

    def sample(self) -> dict[str, dict[str, float]]:
        """CPU seconds spent so far per group, and per role within it, largest first."""
        for group, roots in self.groups.items():
            seen, spent = self.seen[group], self.spent[group]
            for pid, (role, seconds) in cpu_seconds(roots).items():
                known = seen.get(pid, (role, 0.0))[0]
                if len(role) < len(known) and known.startswith(role):  # a title read cut to the 15 bytes of
                    role = known  # the process's name (its command line was being rewritten): the same role
                spent[role] = spent.get(role, 0.0) + seconds - seen.get(pid, (role, 0.0))[1]
                seen[pid] = (role, seconds)
        return {group: dict(sorted(((role, s) for role, s in spent.items() if s >= 0.005), key=lambda item: -item[1]))
                for group, spent in self.spent.items()}
