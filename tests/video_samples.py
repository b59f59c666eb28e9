"""Synthetic test videos from lfw-dev stills, their expected tracks, and a watchlist to match them.

The "ABC" clip (640x360, 10 fps, 10.5 s): A alone (0-2 s); B replacing A at the same place
(2-4 s: only the embeddings can tell them apart); nobody; A and B together (5.5-7.5 s), moving and
changing scale; nobody; C, enrolled nowhere (9-10.5 s). The photos in the clip are not the enrolled
ones.
"""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facevideo.synthetic import Appearance, background, render, write_video

PERSON_A, PERSON_B, STRANGER = "Omar_Sharif", "Nicolas_Cage", "John_Elway"
DISTRACTORS = ("Jacques_Chirac", "Demi_Moore", "Paul_Burrell", "Catherine_Deneuve")
ABC_DURATION = 10.5
ABC_FPS = 10
# (subject or None for the stranger, first seen, last seen) of every expected track, by start time.
ABC_TRACKS = [(PERSON_A, 0.0, 1.9), (PERSON_B, 2.0, 3.9), (PERSON_A, 5.5, 7.4), (PERSON_B, 5.5, 7.4),
              (None, 9.0, 10.4)]


def photos(data_dir: Path, name: str) -> list[Path]:
    return sorted((data_dir / "lfw-dev" / name).glob("*.jpg"))


def still(data_dir: Path, name: str, index: int) -> np.ndarray:
    return cv2.imread(str(photos(data_dir, name)[index]))


def abc_appearances(data_dir: Path) -> list[Appearance]:
    a, b, c = still(data_dir, PERSON_A, 1), still(data_dir, PERSON_B, 1), still(data_dir, STRANGER, 0)
    return [Appearance(a, 0.0, 2.0, (0.35, 0.5), 200, grow=1.1, drift=(10, 0)),
            Appearance(b, 2.0, 4.0, (0.38, 0.5), 210, grow=0.95, drift=(-5, 3)),
            Appearance(a, 5.5, 7.5, (0.7, 0.5), 180, grow=1.15, drift=(-8, 0)),
            Appearance(b, 5.5, 7.5, (0.28, 0.45), 200, grow=0.9, drift=(6, 2)),
            Appearance(c, 9.0, 10.5, (0.5, 0.5), 200, grow=1.1, drift=(0, -4))]


def write_abc_video(path: Path, data_dir: Path) -> Path:
    return write_video(path, abc_appearances(data_dir), ABC_DURATION, size=(640, 360), fps=ABC_FPS)


def enroll_watchlist(admin, url: str, data_dir: Path, application: str) -> dict:
    """A recognition service with A, B and a few others enrolled (first photo each); its API key and id."""
    from serve_app.client import FaceClient

    app = admin.create_application(application)
    service = admin.create_service(app["id"], "watchlist", "recognition")
    with FaceClient(url, api_key=service["api_key"]) as client:
        for name in (PERSON_A, PERSON_B, *DISTRACTORS):
            client.add_face(photos(data_dir, name)[0], subject=name)
    return {"application": app, "service": service}


def wait_for(condition, timeout: float, interval: float = 0.25, message: str = "condition"):
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}; last value: {last!r}")


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[:, :, ::-1]).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


class MjpegServer:
    """An MJPEG-over-HTTP camera on 127.0.0.1 showing ``appearance`` forever; stop and restart it at will."""

    def __init__(self, appearance: Appearance, fps: float = 10, size: tuple[int, int] = (480, 270), port: int = 0):
        self.fps = fps
        base = background(*size)
        self.frames = [jpeg(render(base, [appearance], t / fps)) for t in range(int(fps * 2))]
        self.port = port
        self.hosts: list[str | None] = []  # the Host header of each request
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/camera.mjpg"

    def start(self) -> "MjpegServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.hosts.append(self.headers.get("Host"))
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                index = 0
                try:
                    while owner._server is self.server:
                        data = owner.frames[index % len(owner.frames)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(data) + data + b"\r\n")
                        index += 1
                        time.sleep(1 / owner.fps)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
