"""HAProxy's own error answers, through the ``faces-haproxy`` command the platform runs HAProxy with:
the real HAProxy binary, a config shaped like Ray Serve's (its 502/503/504 mapped to one page that
Serve writes as a plain 500), and a backend whose only server is down."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from haproxy_process import haproxy_running, once_listening
from serve_app.ingress_error_page import RETRY_AFTER_S, UNAVAILABLE, haproxy_binary

# what Ray Serve 2.60's HAProxyManager writes as the page of HAProxy's own errors
SERVE_PAGE = ("HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n\r\n"
              "Internal Server Error")


def serve_like_config(folder: Path, port: int, dead_port: int) -> Path:
    page = folder / "500.http"
    page.write_text(SERVE_PAGE)
    config = folder / "haproxy.cfg"
    config.write_text(f"""global
    maxconn 64
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    retries 1
    errorfile 502 {page}
    errorfile 503 {page}
    errorfile 504 {page}
frontend http_frontend
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    server replica 127.0.0.1:{dead_port}
""")
    return config


def answer_through(command: str, config: Path, port: int) -> httpx.Response:
    with haproxy_running(command, config) as process:
        return once_listening(process, lambda: httpx.get(f"http://127.0.0.1:{port}/api/v1/recognition/faces",
                                                         timeout=10), httpx.TransportError)


@pytest.fixture
def folder(tmp_path) -> Path:
    return tmp_path


def test_plain_haproxy_answers_with_serves_plain_500_when_no_replica_is_up(folder):
    port = free_port()
    response = answer_through(haproxy_binary(), serve_like_config(folder, port, free_port()), port)
    assert response.status_code == 500 and response.text == "Internal Server Error"


def test_faces_haproxy_answers_the_apis_json_503_with_retry_after(folder):
    port = free_port()
    command = str(Path(sysconfig.get_path("scripts")) / "faces-haproxy")
    response = answer_through(command, serve_like_config(folder, port, free_port()), port)
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER_S)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == UNAVAILABLE and "try again" in body["message"]
