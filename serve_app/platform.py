"""Start and stop the whole platform on a Ray cluster: PostgreSQL, Ray, Serve, the application.

Used by ``faces serve`` and by the tests, so both run exactly the same start-up.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

import ray
from ray import serve

from actors.video_supervisor import ensure_supervisor, stop_video
from faces_settings import Settings
from serve_app.app import APP_NAME, deploy
from serve_app.body_limits import PROXY_CALLBACK_ENV, PROXY_LIMIT_ENV, largest_body
from store.control import ControlPlane
from store.embedded_pg import EmbeddedPostgres, resolve_dsn

log = logging.getLogger(__name__)

# Ray Serve's throughput settings: requests between deployments over gRPC, user code and the router on
# each replica's main event loop (recognize: 36.2 -> 38.6-39.9 requests/s, docs/benchmarks.md). Ray's
# processes read them when they start, so they are set before Ray is; a cluster sets them where it
# runs `ray start` (cluster.yaml).
SERVE_THROUGHPUT_ENV = {
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}


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


def start_platform(settings: Settings, ray_init_options: dict | None = None) -> Platform:
    """Bring everything up and return once the application is deployed and serving.

    ``admin_token`` of the result is set only on the very first start without a configured token:
    it is the generated token, which the caller shows once.
    """
    settings = settings.resolved()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    dsn, embedded = resolve_dsn(settings.postgres_dsn, settings.data_dir)
    settings = settings.model_copy(update={"postgres_dsn": dsn})
    admin_token = asyncio.run(_prepare_control_plane(dsn, settings.admin_token))
    owns_ray = not ray.is_initialized()
    if owns_ray:
        for name, value in {**SERVE_THROUGHPUT_ENV, **PROXY_CALLBACK_ENV}.items():
            os.environ.setdefault(name, value)
        os.environ[PROXY_LIMIT_ENV] = str(largest_body(settings.max_upload_bytes, settings.max_json_bytes))
        address = settings.ray_address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, include_dashboard=False, **(ray_init_options or {}))
    deploy(settings)
    ensure_supervisor(settings, APP_NAME)  # video streams resume with the platform
    log.info("serving on http://%s:%s", settings.host, settings.port)
    return Platform(settings=settings, admin_token=admin_token, embedded_postgres=embedded, owns_ray=owns_ray)
