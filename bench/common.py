"""Helpers shared by the benchmark scripts: test photos, timing, tables, JSON results."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data_dir() -> Path:
    root = Path(os.environ.get("FACES_TEST_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()
    if not (root / "lfw-dev").is_dir():
        raise SystemExit(f"test photos not found at {root}: set FACES_TEST_DATA")
    return root


def lfw_images(folder: str = "lfw-dev", limit: int = 0) -> list[Path]:
    paths = sorted((data_dir() / folder).glob("*/*.jpg"))
    return paths[:limit] if limit else paths


class Stopwatch:
    """``with Stopwatch() as watch: ...`` then ``watch.seconds``."""

    def __enter__(self) -> "Stopwatch":
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.started


def print_table(headers: list[str], rows: list[list]) -> None:
    """A Markdown table, ready to paste into docs/benchmarks.md."""
    def cell(value) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(cell(v) for v in row) + " |")


def save_results(name: str, results: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    return path
