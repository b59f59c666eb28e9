"""What the commands that start or join Ray print: their own lines, not Ray's.

Ray, Serve and Ray Data log to the console at INFO (cluster start, Serve's controller, every dataset's
execution plan), the workers' output is copied to the driver, and Ray Data warns about its own
operator sizes: a new user sees the one line that matters (URL, token, progress) lost among them.
Unless ``faces -v``, the commands keep Ray's loggers at ERROR, leave the workers' output in the
cluster's log files (``/tmp/ray/session_latest/logs`` on a local cluster), and drop Ray Data's
sizing warnings. Errors still reach the console: Ray's error logs, and every failure the command
sees as an exception.

Two kinds of Ray's lines reach the terminal past every logger, so :func:`quiet_ray` filters them out of
the process's output (all other output passes unchanged): one line of Ray's C++ core that is not an
error although it is logged as one (every Ray Data actor pool, the bulk jobs' embedders, is created
with its map function in the object store and with restarts on, which the core worker reports for each
pool: ray-project/ray#53727), and the warnings the raylets push to every driver ("(raylet) WARNING: 14
PYTHON worker processes have been started ..." on a busy node), printed by the driver's own listener.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
import warnings

RAY_LOGGERS = ("ray", "ray.serve", "ray.data")
# "[2026-11-26 16:08:41,543 E 1730 2732] core_worker.cc:2465: Actor with class name: 'MapWorker(...)' and
# ID: '...' has constructor arguments in the object store and max_restarts > 0. ... for more details.\n"
# and "\x1b[33m(raylet)\x1b[0m WARNING: 14 PYTHON worker processes have been started on node: ...\n"
RAY_NOTICES = re.compile(
    rb"\[[^\]\n]*\] core_worker\.cc:\d+: Actor with class name: [^\n]* has constructor arguments in the "
    rb"object store and max_restarts > 0\.[^\n]*\n"
    rb"|(?:\x1b\[\d+m)?\(raylet[^)\n]*\)(?:\x1b\[0m)? WARNING: [^\n]*\n")
NOTICE_STARTS = (b"[", b"\x1b[", b"(raylet")  # how a line that may be one of them begins


def quiet_ray(verbose: bool) -> dict:
    """Quiet Ray's console output unless ``verbose``; returns the ``ray.init`` options that go with it."""
    if verbose:
        return {}
    import ray.data  # noqa: F401  (Ray Data and Serve configure their loggers when imported)
    import ray.serve  # noqa: F401

    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data\.")
    for fd in (1, 2):  # the raylets' warnings arrive on stdout, the core worker's lines on stderr
        OutputFilter(fd, RAY_NOTICES).install()
    return {"log_to_driver": False, "logging_level": logging.ERROR}


class OutputFilter:
    """Everything written to file descriptor ``fd`` (1 or 2; Python's and native code's) passes through a
    pipe and reaches the terminal without the lines that match ``pattern``; written through as it comes,
    so that a progress bar's redraws are not held back (only an unfinished line that may be a notice
    waits for its end)."""

    def __init__(self, fd: int, pattern: re.Pattern[bytes]):
        self.fd = fd
        self.pattern = pattern
        self._terminal = -1
        self._reader: threading.Thread | None = None

    def install(self) -> None:
        self._flush()
        self._terminal = os.dup(self.fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, self.fd)
        os.close(write_end)
        self._reader = threading.Thread(target=self._pass_through, args=(read_end,), daemon=True,
                                        name=f"output-filter-{self.fd}")
        self._reader.start()
        atexit.register(self.uninstall)

    def uninstall(self) -> None:
        """Put the terminal back on the descriptor and let the reader write out what it still holds (it
        waits no longer than a moment for a process started meanwhile that still holds the pipe)."""
        self._flush()
        os.dup2(self._terminal, self.fd)
        self._reader.join(timeout=1)

    def _flush(self) -> None:
        (sys.stdout if self.fd == 1 else sys.stderr).flush()

    def _pass_through(self, read_end: int) -> None:
        pending = b""
        while chunk := os.read(read_end, 65536):
            pending += chunk
            start_of_tail = pending.rfind(b"\n") + 1
            cut = start_of_tail if pending[start_of_tail:].startswith(NOTICE_STARTS) else len(pending)
            os.write(self._terminal, self.pattern.sub(b"", pending[:cut]))
            pending = pending[cut:]
        os.write(self._terminal, self.pattern.sub(b"", pending))
        os.close(read_end)
