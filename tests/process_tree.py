"""The processes a test started, read from /proc: to check that nothing outlives the platform."""

from __future__ import annotations

import os


def _stat(pid: str) -> tuple[str, int, str] | None:
    """(command name, parent pid, state) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except OSError:
        return None
    name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
    return name, int(rest[1]), rest[0]


def descendants_named(name: str, root: int | None = None) -> list[int]:
    """Pids of the live processes called ``name`` below ``root`` (this process by default)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(entry)) is not None and stat[2] != "Z":
            names[int(entry)] = stat[0]
            children.setdefault(stat[1], []).append(int(entry))
    found, todo = [], list(children.get(root or os.getpid(), []))
    while todo:
        pid = todo.pop()
        found += [pid] if names.get(pid) == name else []
        todo += children.get(pid, [])
    return sorted(found)


def is_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its parent does not)."""
    stat = _stat(str(pid))
    return stat is not None and stat[2] != "Z"
