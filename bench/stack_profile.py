"""Where a process's CPU goes, by Python function: py-spy samples of running processes (bench extra).

:func:`record` starts one ``py-spy record`` per process (collapsed stacks, idle threads left out, so
the samples follow CPU time) and returns at once; :func:`hottest` reads a recording back as the
functions that were on the CPU in most samples, counted once per sample, inclusive of their callees.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

SAMPLES_PER_S = 100


def record(pids: dict[str, int], seconds: float, folder: Path) -> list[subprocess.Popen]:
    """Start sampling each of ``pids`` (role -> pid) for ``seconds``; stacks go to ``folder/<role>.txt``."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    folder.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                              "--rate", str(SAMPLES_PER_S), "--format", "raw", "--nonblocking",
                              "--output", str(folder / f"{role}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for role, pid in pids.items()]


def hottest(path: Path, top: int = 15) -> tuple[int, list[tuple[str, int]]]:
    """Samples in a recording, and the ``top`` functions by the samples they appear in."""
    total, inclusive = 0, Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")[1:]):  # the first frame names the thread
            inclusive[frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1].rstrip(")")] += int(count)
    return total, inclusive.most_common(top)
