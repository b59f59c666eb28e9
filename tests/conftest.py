"""Shared fixtures: the test photo folder and one face pipeline per session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from facecore.pipeline import FacePipeline, PipelineConfig
from process_tree import descendants_named, is_alive

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_data_dir() -> Path:
    """``FACES_TEST_DATA`` or ``../shared/data``; missing data fails the test, it never skips."""
    # absolute: paths under it are written into manifests, which resolve relative paths against their own folder
    root = Path(os.environ.get("FACES_TEST_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()
    if not (root / "lfw-dev" / "pairs.txt").is_file():
        pytest.fail(f"test photos not found at {root}: set FACES_TEST_DATA")
    return root


def outbound_test_settings() -> dict:
    """Tests play local files (temporary ones, the test photos) and talk to servers on loopback: the
    outbound policy is told to allow both."""
    return {"file_roots": [Path(tempfile.gettempdir()), test_data_dir()], "allowed_networks": ["127.0.0.0/8", "::1/128"]}


@pytest.fixture(scope="session")
def postgres_dir_factory():
    """Make folders for data dirs that hold an embedded PostgreSQL.

    PostgreSQL runs as its own system user, which must traverse the parents of its folder; pytest's
    own temporary folders are private to the user running pytest (and pytest makes them private
    again whenever another pytest session starts), so these folders live directly under the system
    temporary folder.
    """
    made: list[Path] = []

    def make(prefix: str) -> Path:
        made.append(Path(tempfile.mkdtemp(prefix=f"faces-test-{prefix}-")))
        return made[-1]

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return test_data_dir()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def pipeline(models_dir) -> FacePipeline:
    return FacePipeline(PipelineConfig(threads=2, cache_dir=str(models_dir)))


@pytest.fixture(scope="session")
def lfw_faces(pipeline, data_dir):
    """(embeddings, people, qualities) of the largest face of every lfw-dev photo."""
    paths = sorted((data_dir / "lfw-dev").glob("*/*.jpg"))
    vectors, people, qualities = [], [], []
    for start in range(0, len(paths), 16):
        chunk = paths[start:start + 16]
        for path, faces in zip(chunk, pipeline.analyze([p.read_bytes() for p in chunk], limit=1)):
            vectors.append(faces[0].embedding)
            people.append(path.parent.name)
            qualities.append(faces[0].quality.score)
    return np.stack(vectors), np.array(people), np.array(qualities)


@pytest.fixture(scope="session")
def lfw_image(data_dir) -> bytes:
    return (data_dir / "lfw-dev" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg").read_bytes()


@pytest.fixture(scope="session")
def server(postgres_dir_factory, models_dir):
    """The whole platform on one local Ray cluster (2 CPUs, no dashboard) for the test session.

    Two ingress replicas, so that tests can check that replicas share the index shards. Local files
    under the system temporary folder and the test photos, and loopback hosts, are allowed sources.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from faces_settings import Settings
    from serve_app.platform import start_platform

    data_dir = postgres_dir_factory("platform")
    (data_dir / "models").symlink_to(models_dir, target_is_directory=True)
    settings = Settings(data_dir=data_dir, port=free_port(), admin_token="test-admin-token",
                        ingress_replicas=2, threads=2, max_upload_bytes=2 * 1024 * 1024,
                        sse_connections_per_replica=4, **outbound_test_settings())
    platform = start_platform(settings, ray_init_options={"num_cpus": 2, "log_to_driver": False})
    platform.admin_token = settings.admin_token
    haproxy = descendants_named("haproxy")
    assert haproxy, "HAProxy is the platform's default HTTP ingress"
    yield platform
    platform.stop()
    assert not ray.is_initialized()
    assert not [pid for pid in haproxy if is_alive(pid)], "HAProxy outlived the platform"


@pytest.fixture(scope="session")
def admin(server):
    from serve_app.client import FaceClient

    with FaceClient(server.url, admin_token=server.admin_token) as client:
        yield client


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_endpoint():
    """An S3 server (moto) on loopback: ``host:port``."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    yield f"127.0.0.1:{port}"
    moto.stop()


@pytest.fixture
def postgres_tmp_path(postgres_dir_factory) -> Path:
    """A fresh folder that an embedded PostgreSQL can live in (see ``postgres_dir_factory``)."""
    return postgres_dir_factory("case")
