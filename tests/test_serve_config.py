"""The deployment files: serve_config.yaml and the KubeRay manifest pass Serve's own schema, and the
config's import path, deployed by `serve run`, serves the API with an autoscaled embedder that load
scales up and idleness scales down."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from conftest import free_port
from serve_app.client import FaceClient

REPO = Path(__file__).resolve().parent.parent
SCALE_UP_TIMEOUT_S = 120
SCALE_DOWN_TIMEOUT_S = 120


def serve_config() -> dict:
    return yaml.safe_load((REPO / "serve_config.yaml").read_text())


def kuberay_serve_config() -> dict:
    service = next(yaml.safe_load_all((REPO / "deploy" / "kuberay" / "rayservice.yaml").read_text()))
    return yaml.safe_load(service["spec"]["serveConfigV2"])


@pytest.mark.parametrize("config", [serve_config, kuberay_serve_config], ids=["serve_config", "kuberay"])
def test_configs_pass_serves_schema_and_name_known_settings(config):
    from faces_settings import Settings

    schema = ServeDeploySchema.model_validate(config())
    (application,) = schema.applications
    assert application.import_path == "serve_app.platform:build_from_config"
    unknown = set(application.args) - set(Settings.model_fields)
    assert not unknown, f"args that are no setting: {unknown}"
    Settings(**application.args)  # values the settings accept


def test_kuberay_manifest_has_a_cpu_head_and_a_gpu_group_with_secrets():
    service = next(yaml.safe_load_all((REPO / "deploy" / "kuberay" / "rayservice.yaml").read_text()))
    cluster = service["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    (group,) = cluster["workerGroupSpecs"]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    secret_env = {entry["name"] for entry in worker["env"] if "secretKeyRef" in entry.get("valueFrom", {})}
    assert {"FACES_POSTGRES_DSN", "FACES_ADMIN_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secret_env
    assert 0 < kuberay_serve_config()["applications"][0]["args"]["embedder_num_gpus"] < 1


def test_cluster_launcher_config_autoscales_gpu_workers():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    types = config["available_node_types"]
    assert "GPU" not in types[config["head_node_type"]]["resources"]
    workers = [spec for name, spec in types.items() if name != config["head_node_type"]]
    assert any(spec["resources"].get("GPU", 0) >= 1 and spec["max_workers"] > spec["min_workers"] for spec in workers)


def _embedder_replicas() -> int:
    from ray import serve

    status = serve.status().applications["faces"].deployments["Embedder"]
    return status.replica_states.get("RUNNING", 0)


@pytest.fixture(scope="module")
def deployed(postgres_dir_factory, models_dir, tmp_path_factory):
    """A local Ray (2 CPUs) with the application of serve_config.yaml deployed by `serve run`."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from store.embedded_pg import resolve_dsn

    data_dir = postgres_dir_factory("serve-config")
    (data_dir / "models").symlink_to(models_dir, target_is_directory=True)
    dsn, embedded = resolve_dsn(None, data_dir)
    port = free_port()
    config = serve_config()
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    application = config["applications"][0]
    application["args"].update(ingress_replicas=1, embedder_replicas=1, embedder_max_replicas=2,
                               embedder_num_cpus=0.5, embedder_target_ongoing_requests=1,
                               embedder_upscale_delay_s=1, embedder_downscale_delay_s=2, threads=1)
    application["runtime_env"] = {"env_vars": {
        "FACES_POSTGRES_DSN": dsn, "FACES_ADMIN_TOKEN": "config-admin-token", "FACES_DATA_DIR": str(data_dir),
    }}
    config_path = tmp_path_factory.mktemp("serve-config") / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        subprocess.run([sys.executable, "-m", "ray.serve.scripts", "run", "--non-blocking",
                        "--address", ray.get_runtime_context().gcs_address, str(config_path)],
                       check=True, timeout=180, cwd=REPO, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"the application of serve_config.yaml did not become ready: {serve.status()}")
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()
        embedded.stop()


@pytest.mark.own_cluster  # deploys the config on a Ray cluster of its own
def test_config_application_autoscales_its_embedder_with_load(deployed, lfw_image):
    with FaceClient(deployed, admin_token="config-admin-token") as admin:
        application = admin.create_application("scaling")
        service = admin.create_service(application["id"], "detect", "detection")
    assert _embedder_replicas() == 1
    stop = threading.Event()
    errors: list[int] = []

    def load():
        with FaceClient(deployed, api_key=service["api_key"]) as client:
            while not stop.is_set():
                try:
                    client.detect(lfw_image)
                except Exception as exc:  # noqa: BLE001 - the assertion below reports them
                    errors.append(getattr(exc, "status", -1))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        started = time.monotonic()
        while _embedder_replicas() < 2:
            assert time.monotonic() - started < SCALE_UP_TIMEOUT_S, "load added no embedder replica"
            time.sleep(1)
        scaled_up_s = time.monotonic() - started
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, f"requests failed while scaling up: {errors[:5]}"
    started = time.monotonic()
    while _embedder_replicas() > 1:
        assert time.monotonic() - started < SCALE_DOWN_TIMEOUT_S, "idleness removed no embedder replica"
        time.sleep(1)
    print(f"scaled up in {scaled_up_s:.0f} s, down in {time.monotonic() - started:.0f} s")
