"""``faces serve``: run the platform until interrupted."""

from __future__ import annotations

import argparse
import signal
import threading
import warnings

from faces_settings import get_settings


def serve_command(args: argparse.Namespace) -> int:
    from faces_cli.console import quiet_ray
    from serve_app.platform import start_platform  # Ray is imported only by commands that need it

    # Ray, PostgreSQL and HAProxy are started by fork and exec: the child never runs LanceDB's runtime,
    # so LanceDB's warning about forking (one per process started) says nothing to act on here.
    warnings.filterwarnings("ignore", message="lancedb fork support is experimental", category=RuntimeWarning)

    overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    print("Starting Ray, PostgreSQL and the API (about a minute)...", flush=True)
    platform = start_platform(get_settings().model_copy(update=overrides), ray_init_options=quiet_ray(args.verbose))
    if platform.admin_token:
        print(f"Admin token (shown once, keep it): {platform.admin_token}", flush=True)
    ingress = "HAProxy" if platform.settings.haproxy else "Serve's proxy"
    print(f"Serving on {platform.url} (plain HTTP, {ingress})  API docs: {platform.url}/docs  "
          f"data: {platform.settings.data_dir}", flush=True)
    print(f"Web UI: {platform.url}/ui/  (first start: create the owner there with the admin token, "
          "or run `faces users add EMAIL --role owner`)", flush=True)
    print("Ctrl-C stops it; `faces -v serve` also shows Ray's own logs here.", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    print("Stopping...", flush=True)
    platform.stop()
    return 0


def add_parsers(subparsers) -> None:
    serve = subparsers.add_parser("serve", help="serve the HTTP API (local Ray and embedded PostgreSQL by default)")
    serve.add_argument("--host", default=None, help="HTTP host (default FACES_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="HTTP port (default FACES_PORT or 8000)")
    serve.set_defaults(handler=serve_command)
