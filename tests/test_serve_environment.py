"""The environment the platform gives Ray's processes for each ingress (no Ray started here)."""

from __future__ import annotations

import os

from faces_settings import Settings
from serve_app.platform import (HAPROXY_ENV, LISTENER_PORTS, PROXY_START_ENV, RAYLET_ALLOCATOR_ENV, SERVE_THROUGHPUT_ENV,
                                serve_environment)


def test_haproxy_and_throughput_mode_are_the_default_on_linux():
    env = serve_environment(Settings())
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert {k: env[k] for k in HAPROXY_ENV} == HAPROXY_ENV
    assert {k: env[k] for k in PROXY_START_ENV} == PROXY_START_ENV  # a proxy's first start may be slow
    # two platforms on one machine must not fight over the ports of HAProxy's stats and metrics and of
    # Serve's fallback proxy (Ray's fixed defaults 8404, 9101, 8500, 9500): free ones at each start
    names = ("HAPROXY_STATS", "HAPROXY_METRICS", "FALLBACK_PROXY_HTTP", "FALLBACK_PROXY_GRPC")
    ports = {int(env[f"RAY_SERVE_{name}_PORT"]) for name in names}
    assert len(ports) == 4 and not ports & {8404, 9101, 8500, 9500}
    assert all(port in LISTENER_PORTS for port in ports)  # out of the range outgoing connections take
    # HAProxy runs through the command that gives its own error answers the API's JSON 503
    command = env["RAY_SERVE_HAPROXY_BINARY_PATH"]
    assert os.path.basename(command) == "faces-haproxy" and os.access(command, os.X_OK)


def test_configured_haproxy_ports_are_used():
    env = serve_environment(Settings(haproxy_stats_port=18404, haproxy_metrics_port=19101))
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404" and env["RAY_SERVE_HAPROXY_METRICS_PORT"] == "19101"


def test_the_switch_turns_haproxy_off_and_keeps_serves_throughput_settings(monkeypatch):
    monkeypatch.setenv("FACES_HAPROXY", "false")
    env = serve_environment(Settings())
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "0" and env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
    assert {k: env[k] for k in SERVE_THROUGHPUT_ENV} == SERVE_THROUGHPUT_ENV
    assert {k: env[k] for k in PROXY_START_ENV} == PROXY_START_ENV


def test_the_raylets_allocator_settings_go_with_either_ingress(monkeypatch):
    for haproxy in ("true", "false"):
        monkeypatch.setenv("FACES_HAPROXY", haproxy)
        env = serve_environment(Settings())
        assert {k: env[k] for k in RAYLET_ALLOCATOR_ENV} == RAYLET_ALLOCATOR_ENV
