"""Global HAProxy settings the platform adds to Ray Serve's generated config.

Serve's config template takes no global settings of ours, but HAProxy reads every ``-f`` file it is
given and merges their ``global`` sections: the ``faces-haproxy`` command
(:mod:`serve_app.ingress_error_page`) writes :data:`GLOBAL_SETTINGS` next to Serve's config and
adds it to HAProxy's command line, at each start and reload.

``tune.pattern.cache-size 0``: HAProxy caches the result of matching a sample against an ACL's
pattern list in a least-recently-used cache of 10,000 entries per thread, one entry per distinct
value per ACL. Serve's case-insensitive ``path -i`` ACLs (``/-/healthz``, ``/-/routes``) go
through that cache for every request, and the API's paths carry ids (``DELETE
/api/v1/recognition/faces/{id}``): each new id added two entries (about 110 bytes each), so the
soak's deletes grew HAProxy by ~26 bytes per request, linearly for about an hour, until 1.1 MB per
thread (4.4 MB with Serve's 4 threads).
With single-pattern ACLs there is nothing for the cache to save; without it HAProxy compares the
path with each ACL's one pattern.

This module is run at each HAProxy start: it imports nothing heavy.
"""

from __future__ import annotations

import os
from pathlib import Path

GLOBAL_SETTINGS = """\
# written by faces-haproxy (serve_app/haproxy_global.py) at each HAProxy start
global
    # no cache of ACL match results: one entry per distinct request path and ACL, up to 10,000 per thread
    tune.pattern.cache-size 0
"""
FILE_NAME = "faces-global.cfg"


def install_file(path: Path, content: bytes) -> None:
    """Make ``path`` hold ``content``, atomically (a reload of HAProxy never reads half a file);
    a file that already holds it is left alone."""
    if path.is_file() and path.read_bytes() == content:
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(content)
    os.replace(partial, path)


def install_global_settings(config: Path) -> Path:
    """Write :data:`GLOBAL_SETTINGS` next to ``config``; the path of the written file."""
    path = config.with_name(FILE_NAME)
    install_file(path, GLOBAL_SETTINGS.encode())
    return path


def with_config_file(arguments: list[str], config: Path, extra: Path) -> list[str]:
    """HAProxy's ``arguments`` with ``-f extra`` right after ``-f config`` (HAProxy loads its
    config files in order: Serve's first, so that ours adds to its global section)."""
    for index, (flag, value) in enumerate(zip(arguments, arguments[1:])):
        if flag == "-f" and Path(value) == config:
            return [*arguments[:index + 2], "-f", str(extra), *arguments[index + 2:]]
    raise ValueError(f"no -f {config} in {arguments}")
