"""RTSP sources cannot redirect FFmpeg past the outbound policy, and https sources keep their SNI.

Real FFmpeg (PyAV) against tiny RTSP servers written here (asyncio, real TCP on loopback): one
answers OPTIONS and then redirects DESCRIBE, the other stands for an internal host (127.0.0.2:
loopback the test policy does not list) and records whether anything reached it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port
from facevideo.source import SourceError, VideoSource
from facevideo.synthetic import Appearance
from outbound import OutboundPolicy
from outbound.relay import Relay
from video_samples import MjpegServer, still

ONLY_127_0_0_1 = OutboundPolicy.build(allowed_networks=["127.0.0.1/32"])


class RtspServer:
    """An RTSP server on ``host`` (its own thread and event loop): OPTIONS is answered 200, DESCRIBE
    with ``describe`` (status line and headers, the CSeq added); ``requests`` records the method and
    URL of every request; ``connections`` counts the connections made to it."""

    def __init__(self, host: str, describe: str = "RTSP/1.0 404 Not Found"):
        self.describe = describe
        self.requests: list[tuple[str, str]] = []
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start() -> None:
            self.server = await asyncio.start_server(self._serve, host, 0)
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=5)
        ready.wait(5)
        self.url = f"rtsp://{host}:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                method, url, _ = head.split("\r\n", 1)[0].split(" ", 2)
                self.requests.append((method, url))
                cseq = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                            if line.lower().startswith("cseq:"))
                status = "RTSP/1.0 200 OK\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN" \
                    if method == "OPTIONS" else self.describe
                writer.write(f"{status}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def rtsp_hosts():
    """An internal host the policy refuses (127.0.0.2), and the camera host it allows (127.0.0.1),
    whose DESCRIBE the test sets."""
    internal = RtspServer("127.0.0.2", "RTSP/1.0 200 OK")
    camera = RtspServer("127.0.0.1")
    yield camera, internal
    camera.close()
    internal.close()


def test_ffmpeg_follows_rtsp_redirects_on_its_own(rtsp_hosts):
    """Why the relay exists: FFmpeg alone (no policy) goes wherever the camera sends it."""
    camera, internal = rtsp_hosts
    camera.describe = f"RTSP/1.0 302 Found\r\nLocation: {internal.url}/secret"
    with pytest.raises(SourceError):
        VideoSource(f"{camera.url}/cam", policy=None, open_timeout=5)
    assert ("DESCRIBE", f"{internal.url}/secret") in internal.requests


@pytest.mark.parametrize("status", ["301 Moved Permanently", "302 Found"])
@pytest.mark.parametrize("admin", [False, True])
def test_an_rtsp_redirect_to_a_refused_host_is_not_followed(rtsp_hosts, status, admin):
    camera, internal = rtsp_hosts
    camera.describe = f"RTSP/1.0 {status}\r\nLocation: {internal.url}/secret"
    with pytest.raises(SourceError) as error:
        VideoSource(f"rtsp://user:pw@127.0.0.1:{camera.url.rsplit(':', 1)[1]}/cam", policy=ONLY_127_0_0_1,
                    admin=admin, open_timeout=5)
    assert error.value.permanent
    assert "127.0.0.2 is a loopback address that FACES_ALLOWED_NETWORKS does not list" in str(error.value)
    assert "pw" not in str(error.value)
    assert [method for method, _ in camera.requests] == ["OPTIONS", "DESCRIBE"]
    assert internal.connections == 0, "FFmpeg followed the RTSP redirect to a host the policy refuses"


def test_an_rtsp_redirect_between_allowed_hosts_is_checked_and_followed(rtsp_hosts):
    camera, _ = rtsp_hosts
    other = RtspServer("127.0.0.1")  # answers DESCRIBE with 404: the redirect reached it
    camera.describe = f"RTSP/1.0 302 Found\r\nLocation: {other.url}/door"
    try:
        with pytest.raises(SourceError) as error:
            VideoSource(f"{camera.url}/cam", policy=ONLY_127_0_0_1, admin=False, open_timeout=5)
        assert "Not Found" in str(error.value)
        assert [method for method, _ in other.requests] == ["OPTIONS", "DESCRIBE"]
        # a server that keeps redirecting is given up on
        camera.describe = f"RTSP/1.0 302 Found\r\nLocation: {camera.url}/again"
        with pytest.raises(SourceError, match="more than 5 redirects") as error:
            VideoSource(f"{camera.url}/cam", policy=ONLY_127_0_0_1, admin=False, open_timeout=5)
        assert error.value.permanent
    finally:
        other.close()


def test_an_rtsp_source_that_refuses_connections_is_tried_again_later():
    with pytest.raises(SourceError, match="Connection refused") as error:
        VideoSource(f"rtsp://127.0.0.1:{free_port()}/cam", policy=ONLY_127_0_0_1, admin=False, open_timeout=5)
    assert not error.value.permanent


def test_the_relay_passes_answers_and_interleaved_packets_unchanged():
    """Bytes both ways through the relay: a request reaches the server as sent, an answer with a body
    and interleaved packets split across writes reach the client whole, in order."""
    answer = b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: 5\r\n\r\nv=0\r\n"
    packets = b"$\x00\x00\x04abcd" + b"$\x01\x00\x02xy"
    received: list[bytes] = []

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            received.append(connection.recv(1024))
            for start in range(0, len(answer + packets), 7):  # in pieces that cut heads and packets
                connection.sendall((answer + packets)[start:start + 7])
            connection.recv(1024)  # until the client closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    relay = Relay(f"rtsp://127.0.0.1:{listener.getsockname()[1]}/cam", ONLY_127_0_0_1, timeout=5)
    local = relay.open()
    try:
        host, port = local.split("//", 1)[1].split("/", 1)[0].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as client:
            client.sendall(b"DESCRIBE rtsp://x/cam RTSP/1.0\r\nCSeq: 2\r\n\r\n")
            data = b""
            while len(data) < len(answer + packets):
                data += client.recv(1024)
        assert data == answer + packets
        assert received == [b"DESCRIBE rtsp://x/cam RTSP/1.0\r\nCSeq: 2\r\n\r\n"]
        assert relay.redirect is None
    finally:
        relay.close()
        listener.close()
        thread.join(timeout=5)


# --- https: the checked address, the name as TLS's server name --------------------------------------

def self_signed(tmp_path, name: str) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for ``name``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                   .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


def test_an_https_source_by_name_plays_with_the_name_as_sni_at_the_checked_address(monkeypatch, tmp_path, data_dir):
    names: list[str | None] = []  # the server name of every TLS handshake, None: none sent
    hosts: list[str | None] = []
    context = self_signed(tmp_path, "camera.sni.test")
    context.sni_callback = lambda connection, name, _: names.append(name)
    frames = MjpegServer(Appearance(still(data_dir, "Abel_Pacheco", 1), 0, 1e9, (0.5, 0.5), 120)).frames

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hosts.append(self.headers.get("Host"))
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for data in frames * 3:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                     % len(data) + data + b"\r\n")
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    class TlsServer(ThreadingHTTPServer):
        def get_request(self):
            connection, address = super().get_request()
            return context.wrap_socket(connection, server_side=True), address

    server = TlsServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    resolve = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs: resolve(
        "127.0.0.1" if host == "camera.sni.test" else host, *args, **kwargs))
    authority = f"camera.sni.test:{server.server_address[1]}"
    try:
        source = VideoSource(f"https://{authority}/cam.mjpg", policy=ONLY_127_0_0_1, admin=False, open_timeout=5)
        try:
            frame = next(iter(source.frames()))
        finally:
            source.close()
        assert frame.image.shape == (270, 480, 3)
        # the redirect check's connection and FFmpeg's (through the relay), both to 127.0.0.1, both
        # naming the host in TLS and in HTTP
        assert names == ["camera.sni.test"] * 2
        assert hosts == [authority] * 2
    finally:
        server.shutdown()
        server.server_close()


def test_an_https_relay_serves_each_of_ffmpegs_connections_at_the_same_address(tmp_path):
    """FFmpeg opens a new HTTP connection for each seek in a file: each goes to the checked address."""
    context = self_signed(tmp_path, "localhost")
    listener = context.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True)
    answered: list[bytes] = []

    def serve() -> None:
        for _ in range(2):
            connection, _ = listener.accept()
            with connection:
                answered.append(connection.recv(1024))
                connection.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    relay = Relay(f"https://127.0.0.1:{listener.getsockname()[1]}/clip.mp4", ONLY_127_0_0_1, timeout=5)
    local = relay.open()
    try:
        assert local.startswith("http://127.0.0.1:")
        host, port = local.split("//", 1)[1].split("/", 1)[0].split(":")
        for request in (b"GET /clip.mp4 HTTP/1.1\r\n\r\n", b"GET /clip.mp4 HTTP/1.1\r\nRange: bytes=9-\r\n\r\n"):
            with socket.create_connection((host, int(port)), timeout=5) as client:
                client.sendall(request)
                assert client.recv(1024).startswith(b"HTTP/1.1 204")
        thread.join(timeout=5)
        assert answered == [b"GET /clip.mp4 HTTP/1.1\r\n\r\n", b"GET /clip.mp4 HTTP/1.1\r\nRange: bytes=9-\r\n\r\n"]
    finally:
        relay.close()
        listener.close()
