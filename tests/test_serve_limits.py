"""Bounded request bodies: a body over its route's limit is refused with 413 before authentication and
before parsing, whether its size is declared (Content-Length) or not (chunked), without reading the rest."""

from __future__ import annotations

import select
import socket
import time
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from serve_app.schemas import MAX_EMBEDDINGS

CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def recognition_key(server, admin):
    application = admin.create_application("test-limits")
    return admin.create_service(application["id"], "limits", "recognition")["api_key"]


def _connect(server) -> socket.socket:
    address = urlsplit(server.url)
    sock = socket.create_connection((address.hostname, address.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_status(sock: socket.socket, timeout: float) -> tuple[int | None, bytes]:
    """The status line's code and what came with it, or None if nothing arrived within ``timeout``."""
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\r\n\r\n" not in received and time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            data = sock.recv(65536)
            if not data:
                break
            received += data
    except ConnectionError:
        pass
    if not received.startswith(b"HTTP/1.1 "):
        return None, received
    return int(received[9:12]), received


def _request_head(server, path: str, headers: dict[str, str]) -> bytes:
    host = urlsplit(server.url).netloc
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _send_chunked_until_answered(sock: socket.socket, head: bytes, total: int) -> tuple[int | None, int]:
    """Send ``head`` then ``total`` bytes as chunks, stopping as soon as the server answers or stops reading.

    Returns the answer's status (None if none came) and how many body bytes were sent.
    """
    sock.sendall(_chunk(head))
    chunk = _chunk(b"\x00" * CHUNK)
    sent = 0
    sock.setblocking(False)
    while sent < total:
        readable, writable, _ = select.select([sock], [sock], [], 10)
        if readable or not writable:
            break
        try:
            sock.sendall(chunk)
        except (BlockingIOError, ConnectionError):
            break
        sent += CHUNK
    sock.setblocking(True)
    if sent >= total:
        try:
            sock.sendall(b"0\r\n\r\n")
        except ConnectionError:
            pass
    status, _ = _read_status(sock, 30)
    return status, sent


def test_declared_oversized_json_without_credential_is_refused_before_it_is_sent(server):
    """64 MB declared on a JSON route, no key: 413 at once, with none of the body sent."""
    sock = _connect(server)
    try:
        started = time.monotonic()
        sock.sendall(_request_head(server, "/api/v1/recognition/subjects", {
            "content-type": "application/json", "content-length": str(64 * 2**20)}))
        status, raw = _read_status(sock, 10)
        assert status == 413, raw[:300]
        assert time.monotonic() - started < 5
        assert b'"code":13' in raw.replace(b" ", b"") or b"\r\n\r\n" in raw
    finally:
        sock.close()


def test_declared_oversized_image_upload_is_refused_before_it_is_sent(server, recognition_key):
    limit = server.settings.max_upload_bytes
    sock = _connect(server)
    try:
        sock.sendall(_request_head(server, "/api/v1/recognition/recognize", {
            "x-api-key": recognition_key, "content-type": "multipart/form-data; boundary=x",
            "content-length": str(4 * limit)}))
        status, raw = _read_status(sock, 10)
        assert status == 413, raw[:300]
    finally:
        sock.close()


@pytest.mark.parametrize("path, content_type, head", [
    ("/api/v1/recognition/recognize", "multipart/form-data; boundary=x",
     b'--x\r\ncontent-disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'),
    ("/api/v1/recognition/embeddings/recognize", "application/json", b'{"embeddings": [[0.1, "'),
])
def test_chunked_body_stops_at_the_limit(server, recognition_key, path, content_type, head):
    """A chunked body of 256 MB is answered 413 once the route's limit is passed: the rest is never read."""
    sock = _connect(server)
    try:
        sock.sendall(_request_head(server, path, {"x-api-key": recognition_key, "content-type": content_type,
                                                  "transfer-encoding": "chunked"}))
        status, sent = _send_chunked_until_answered(sock, head, 256 * 2**20)
    finally:
        sock.close()
    assert status == 413
    assert sent < 48 * 2**20, f"{sent} bytes were taken before the 413"


def test_oversized_json_with_a_key_is_413_with_a_message(server, recognition_key):
    body = b'{"embeddings": [' + b"0.1, " * (server.settings.max_json_bytes // 5) + b"0.1]}"
    response = httpx.post(f"{server.url}/api/v1/recognition/embeddings/recognize", content=body,
                          headers={"x-api-key": recognition_key, "content-type": "application/json"}, timeout=60)
    assert response.status_code == 413
    assert response.json()["code"] == 13 and "bytes" in response.json()["message"]


def test_largest_legitimate_bodies_fit(server, recognition_key, lfw_image):
    """The most embeddings one request may carry, and a base64 image in JSON, are within the limits."""
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((MAX_EMBEDDINGS, 128)).tolist()  # full float64 reprs: the widest JSON
    response = httpx.post(f"{server.url}/api/v1/recognition/embeddings/recognize", json={"embeddings": embeddings},
                          headers={"x-api-key": recognition_key}, timeout=120)
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["result"]) == MAX_EMBEDDINGS
    too_many = httpx.post(f"{server.url}/api/v1/recognition/embeddings/recognize",
                          json={"embeddings": [[0.5] * 128] * (MAX_EMBEDDINGS + 1)},
                          headers={"x-api-key": recognition_key}, timeout=120)
    assert too_many.status_code == 400 and str(MAX_EMBEDDINGS) in too_many.json()["message"]


def test_chunked_upload_within_the_limit_is_served(server, recognition_key, lfw_image):
    def body():
        yield b"--x\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n"
        for start in range(0, len(lfw_image), 4096):
            yield lfw_image[start:start + 4096]
        yield b"\r\n--x--\r\n"

    response = httpx.post(f"{server.url}/api/v1/recognition/recognize", content=body(),
                          headers={"x-api-key": recognition_key, "content-type": "multipart/form-data; boundary=x"},
                          timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["result"]
