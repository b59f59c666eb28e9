"""What the commands that start or join Ray print: their own lines, not Ray's.

Ray, Serve and Ray Data log to the console at INFO (cluster start, Serve's controller, every dataset's
execution plan), the workers' output is copied to the driver, and Ray Data warns about its own
operator sizes: a new user sees the one line that matters (URL, token, progress) lost among them.
Unless ``faces -v``, the commands keep Ray's loggers at ERROR, leave the workers' output in the
cluster's log files (``/tmp/ray/session_latest/logs`` on a local cluster), and drop Ray Data's
sizing warnings. Errors still reach the console: Ray's error logs, and every failure the command
sees as an exception.
"""

from __future__ import annotations

import logging
import warnings

RAY_LOGGERS = ("ray", "ray.serve", "ray.data")


def quiet_ray(verbose: bool) -> dict:
    """Quiet Ray's console output unless ``verbose``; returns the ``ray.init`` options that go with it."""
    if verbose:
        return {}
    import ray.data  # noqa: F401  (Ray Data and Serve configure their loggers when imported)
    import ray.serve  # noqa: F401

    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data\.")
    return {"log_to_driver": False, "logging_level": logging.ERROR}
