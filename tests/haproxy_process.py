"""The real HAProxy binary run by a test: in the foreground on one config, stopped after."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def haproxy_running(command: str, config: Path) -> Iterator[subprocess.Popen]:
    """``command`` (HAProxy, or a command that becomes it) on ``config``; terminated on exit."""
    process = subprocess.Popen([command, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def once_listening(process: subprocess.Popen, attempt: Callable[[], T],
                   errors: type[Exception] | tuple[type[Exception], ...]) -> T:
    """``attempt()``, tried again on ``errors`` while HAProxy starts (up to 10 s, while it runs)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return attempt()
        except errors:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.05)
