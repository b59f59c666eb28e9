"""Builds the Serve application: the one place where deployments are wired together."""

from __future__ import annotations

from ray import serve
from ray.serve import Application

from actors.embedder import Embedder
from faces_settings import Settings
from serve_app.ingress import Ingress

APP_NAME = "faces"
# How often Serve checks an Embedder replica (default 10 s): a dead replica is replaced within seconds.
EMBEDDER_HEALTH_CHECK_S = 2.0
# glibc gives each thread that allocates its own arena; the inference runtimes' thread pools kept the
# embedder's resident memory swinging by 50 MB between samples and about 25 MB higher (a soak of
# recognize/add/delete at half the peak: 644-650 MB with glibc's default, 618-625 MB with 2 arenas)
EMBEDDER_ENV = {"MALLOC_ARENA_MAX": "2"}


def embedder_scaling(settings: Settings) -> dict:
    """The Embedder's replica options: a fixed count, or Serve autoscaling from ``embedder_replicas``
    (the minimum) up to ``embedder_max_replicas`` on the requests in flight per replica."""
    if settings.embedder_max_replicas <= settings.embedder_replicas:
        return {"num_replicas": settings.embedder_replicas}
    return {"autoscaling_config": {
        "min_replicas": settings.embedder_replicas,
        "max_replicas": settings.embedder_max_replicas,
        "target_ongoing_requests": settings.embedder_target_ongoing_requests,
        "upscale_delay_s": settings.embedder_upscale_delay_s,
        "downscale_delay_s": settings.embedder_downscale_delay_s,
    }}


def build_app(settings: Settings) -> Application:
    """Ingress (FastAPI, N replicas) -> Embedder (M replicas or autoscaled, fractional GPUs, dynamic batching)."""
    embedder = Embedder.options(
        **embedder_scaling(settings),
        ray_actor_options={"num_cpus": settings.embedder_num_cpus, "num_gpus": settings.embedder_num_gpus,
                           "runtime_env": {"env_vars": EMBEDDER_ENV}},
        max_ongoing_requests=max(32, 2 * settings.batch_max_size),
        health_check_period_s=EMBEDDER_HEALTH_CHECK_S,
    ).bind(settings)
    return Ingress.options(
        num_replicas=settings.ingress_replicas,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=256,
    ).bind(embedder, settings)


def deploy(settings: Settings, blocking: bool = False) -> None:
    """Start Serve's HTTP proxy on the configured host/port and deploy the application."""
    serve.start(http_options={"host": settings.host, "port": settings.port}, logging_config={"enable_access_log": False})
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=blocking)
