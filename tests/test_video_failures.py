"""Failing video sources on the running platform: a camera (MJPEG over HTTP) that goes away and comes
back, sources that can never work, a worker process that dies; none of them disturbs other streams or
the API."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import ray

from actors.video_supervisor import NAMESPACE, running_workers
from facevideo.synthetic import Appearance
from video_samples import PERSON_A, PERSON_B, MjpegServer, enroll_watchlist, still, wait_for

TIMEOUT_S = 45


class TextServer:
    """An HTTP server that answers every request with a plain web page (not a video)."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"<html><body>not a camera</body></html>" * 50
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/index.html"


def state(admin, stream_id: int) -> dict:
    return admin.get_stream(stream_id)["status"]


def test_dropped_sources_reconnect_and_broken_ones_fail_without_harming_others(server, admin, data_dir, tmp_path):
    watchlist = enroll_watchlist(admin, server.url, data_dir, "video-failures")["service"]["id"]
    flaky = MjpegServer(Appearance(still(data_dir, PERSON_A, 1), 0, 1e9, (0.5, 0.5), 200)).start()
    steady = MjpegServer(Appearance(still(data_dir, PERSON_B, 1), 0, 1e9, (0.5, 0.5), 200)).start()
    web_page = TextServer()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(1).integers(0, 255, 100_000, dtype=np.uint8).tobytes())
    try:
        flaky_id = admin.add_stream(flaky.url, watchlist_service_id=watchlist, max_fps=5)["id"]
        steady_id = admin.add_stream(steady.url, watchlist_service_id=watchlist, max_fps=5)["id"]
        corrupt_id = admin.add_stream(str(corrupt), watchlist_service_id=watchlist)["id"]
        page_id = admin.add_stream(web_page.url, watchlist_service_id=watchlist)["id"]

        # both cameras run and recognise their person
        for stream_id, person in ((flaky_id, PERSON_A), (steady_id, PERSON_B)):
            wait_for(lambda: admin.list_events(stream=stream_id), TIMEOUT_S, message=f"an event of stream {stream_id}")
            assert admin.list_events(stream=stream_id)[0]["subject"] == person
            assert state(admin, stream_id)["state"] == "running"

        # sources that can never work fail, with the reason
        for stream_id in (corrupt_id, page_id):
            failed = wait_for(lambda: (s := state(admin, stream_id))["state"] == "failed" and s, TIMEOUT_S,
                              message=f"stream {stream_id} to fail")
            assert "not a readable video" in failed["reason"] and "invalid data" in failed["reason"].lower()

        # the camera goes away: its stream reconnects, the other camera and the API carry on
        flaky.stop()
        dropped = wait_for(lambda: (s := state(admin, flaky_id))["state"] == "reconnecting" and s, TIMEOUT_S,
                           message="the flaky stream to reconnect")
        assert "attempt" in dropped["reason"]
        frames = state(admin, steady_id)["frames"]
        wait_for(lambda: state(admin, steady_id)["frames"] >= frames + 10, 20, message="the steady camera to go on")
        assert state(admin, steady_id)["state"] == "running"
        health = httpx.get(f"{server.url}/readyz", timeout=10)
        assert health.status_code == 200

        # it comes back: the stream resumes by itself and reports the person again
        seen = {e["id"] for e in admin.list_events(stream=flaky_id)}
        flaky.start()
        wait_for(lambda: state(admin, flaky_id)["state"] == "running", TIMEOUT_S, message="the stream to resume")
        fresh = wait_for(lambda: [e for e in admin.list_events(stream=flaky_id) if e["id"] not in seen], TIMEOUT_S,
                         message="an event after the camera came back")
        assert fresh[0]["subject"] == PERSON_A and fresh[0]["reason"] == "appeared"
        assert state(admin, corrupt_id)["state"] == "failed"

        # a worker whose process dies is restarted by Ray and carries on
        started = state(admin, steady_id)["started_at"]
        (worker,) = [n for n in running_workers() if n.startswith(f"video-worker-{steady_id}-")]
        ray.kill(ray.get_actor(worker, namespace=NAMESPACE), no_restart=False)
        restarted = wait_for(lambda: (s := state(admin, steady_id))["started_at"] != started and s["frames"] > 5 and s,
                             TIMEOUT_S, message="the killed worker to come back")
        assert restarted["state"] == "running" and worker in running_workers()
    finally:
        flaky.stop()
        steady.stop()
        web_page.server.shutdown()
        for stream in admin.list_streams():
            admin.delete_stream(stream["id"])
