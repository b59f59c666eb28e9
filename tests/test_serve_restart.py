"""`faces serve` end to end in its own process: first-start admin token, and durability across a
complete stop of the app, Ray and PostgreSQL (HAProxy's ingress stopped with it), started again with
Serve's Python proxy."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from conftest import free_port
from process_tree import descendants_named, is_alive
from serve_app.client import FaceClient

START_TIMEOUT_S = 240


class ServeProcess:
    def __init__(self, env: dict[str, str]):
        self.process = subprocess.Popen([sys.executable, "-m", "faces_cli.main", "serve"], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_until_serving(self) -> list[str]:
        seen, deadline = [], time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.process.poll() is not None:
                    pytest.fail("faces serve exited:\n" + "".join(seen))
                continue
            seen.append(line)
            if line.startswith("Serving on"):
                return seen
        self.stop()
        pytest.fail("faces serve did not start in time:\n" + "".join(seen))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)


FIRST_SCREEN = ("Starting Ray, PostgreSQL and the API", "Admin token (shown once, keep it): ", "Serving on http://")


def assert_first_screen_is_the_platforms_own(output: str) -> None:
    """What a new user sees up to the URL: the platform's own lines, none of Ray's, Serve's or LanceDB's."""
    lines = [line for line in output.splitlines() if line.strip()]
    strangers = [line for line in lines if not line.startswith(FIRST_SCREEN)]
    assert not strangers, "faces serve printed lines of its stack on the first screen:\n" + "\n".join(strangers)
    assert [line.split(" ")[0] for line in lines] == ["Starting", "Admin", "Serving"], output


def test_first_start_prints_the_admin_token_and_faces_survive_a_full_restart(postgres_dir_factory, data_dir,
                                                                            models_dir):
    tmp_path = postgres_dir_factory("restart")
    port = free_port()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "models").symlink_to(models_dir, target_is_directory=True)
    env = {**os.environ, "FACES_DATA_DIR": str(tmp_path / "data"), "FACES_PORT": str(port),
           "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    env.pop("FACES_ADMIN_TOKEN", None)
    url = f"http://127.0.0.1:{port}"

    first = ServeProcess(env)
    output = "".join(first.wait_until_serving())
    haproxy = descendants_named("haproxy", first.process.pid)
    assert haproxy, "faces serve takes HTTP with HAProxy"
    tokens = re.findall(r"Admin token \(shown once, keep it\): (\S+)", output)
    assert len(tokens) == 1
    assert_first_screen_is_the_platforms_own(output)
    admin = FaceClient(url, admin_token=tokens[0])
    application = admin.create_application("durable")
    key = admin.create_service(application["id"], "faces", "recognition")["api_key"]
    api = FaceClient(url, api_key=key)
    photos = {name: sorted((data_dir / "lfw-dev" / name).glob("*.jpg"))
              for name in ("Ari_Fleischer", "Alvaro_Uribe", "Arianna_Huffington")}
    acknowledged = {api.add_face(files[0], subject=name)["image_id"] for name, files in photos.items()}
    first.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2)
    assert not [pid for pid in haproxy if is_alive(pid)], "HAProxy outlived faces serve"

    second = ServeProcess({**env, "FACES_HAPROXY": "false"})  # the switch back to Serve's Python proxy
    output = "".join(second.wait_until_serving())
    try:
        assert "Admin token" not in output
        assert descendants_named("haproxy", second.process.pid) == []
        assert {f["image_id"] for f in api.list_faces(size=100)["faces"]} == acknowledged
        for name, files in photos.items():
            assert api.recognize(files[1])["result"][0]["subjects"][0]["subject"] == name
        assert admin.list_applications()[0]["name"] == "durable"
    finally:
        second.stop()
