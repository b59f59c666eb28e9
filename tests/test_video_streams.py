"""Video streams on the running platform: stream workers (Ray actors) playing a synthetic clip,
events in PostgreSQL with their crops, live Server-Sent Events, webhooks with retries, and the
API's checks. Real Ray, PostgreSQL, HTTP, PyAV."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import ray
from PIL import Image

from actors.video_supervisor import running_workers
from conftest import free_port
from facevideo.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from serve_app.client import FaceApiError, FaceClient
from test_video_scan import assert_abc_tracks
from video_samples import ABC_TRACKS, PERSON_A, enroll_watchlist, wait_for, write_abc_video

CLIP_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def abc_video(tmp_path_factory, data_dir):
    return write_abc_video(tmp_path_factory.mktemp("video") / "abc.mp4", data_dir)


@pytest.fixture(scope="module")
def watchlist(server, admin, data_dir) -> dict:
    return enroll_watchlist(admin, server.url, data_dir, "video-streams")


def wait_for_state(client: FaceClient, stream_id: int, states: set[str], timeout: float = CLIP_TIMEOUT_S) -> dict:
    return wait_for(lambda: (s := client.get_stream(stream_id))["status"]["state"] in states and s,
                    timeout, message=f"stream {stream_id} to reach {states}")


def relative_times(events: list[dict]) -> list[dict]:
    """Events with first/last seen in seconds since the stream's first sighting (the clip's 0 s)."""
    origin = min(datetime.fromisoformat(e["first_seen"]) for e in events)
    return [{**e, "first_seen": (datetime.fromisoformat(e["first_seen"]) - origin).total_seconds(),
             "last_seen": (datetime.fromisoformat(e["last_seen"]) - origin).total_seconds()} for e in events]


def test_a_stream_of_the_clip_gives_one_event_per_track_with_the_right_people(admin, watchlist, abc_video):
    stream = admin.add_stream(str(abc_video), name="abc", watchlist_service_id=watchlist["service"]["id"],
                              mode="overall", max_fps=0, save_frame=True)
    assert stream["status"]["state"] in {"pending", "starting", "running"}
    finished = wait_for_state(admin, stream["id"], {"finished", "failed"})
    assert finished["status"]["state"] == "finished", finished["status"]
    assert finished["status"]["frames"] >= 90 and finished["status"]["faces"] >= 80
    events = admin.list_events(stream=stream["id"])
    assert finished["status"]["events"] == len(events)
    assert all(e["reason"] == "ended" for e in events)
    assert_abc_tracks(relative_times(events))

    # filters
    assert {e["id"] for e in admin.list_events(stream=stream["id"], subject=PERSON_A)} == \
        {e["id"] for e in events if e["subject"] == PERSON_A}
    unknown = admin.list_events(stream=stream["id"], unknown=True)
    assert len(unknown) == 1 and unknown[0]["subject"] is None and unknown[0]["similarity"] is None
    later = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat()
    assert admin.list_events(stream=stream["id"], since=later) == []
    assert len(admin.list_events(stream=stream["id"], limit=2)) == 2

    assert admin.get_event(events[0]["id"]) == events[0]

    # crops and frames
    crop = Image.open(io.BytesIO(admin.event_crop(events[0]["id"])))
    box = events[0]["box"]
    assert crop.format == "JPEG" and crop.width >= box["x_max"] - box["x_min"]
    frame = Image.open(io.BytesIO(admin.event_frame(events[0]["id"])))
    assert frame.size == (640, 360)

    # a finished file is settled: its worker stops (freeing its CPU share) and is not started again
    wait_for(lambda: not any(n.startswith(f"video-worker-{stream['id']}-") for n in running_workers()), 20,
             message="the finished stream's worker to stop")
    assert admin.get_stream(stream["id"])["status"]["state"] == "finished"
    assert len(admin.list_events(stream=stream["id"])) == len(events)


class WebhookReceiver:
    """A local webhook endpoint that fails the first attempt of every event (HTTP 500)."""

    def __init__(self):
        self.attempts: Counter[str] = Counter()
        self.delivered: list[tuple[dict, dict]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                event_id = self.headers[EVENT_ID_HEADER]
                with owner.lock:
                    owner.attempts[event_id] += 1
                    first = owner.attempts[event_id] == 1
                    if not first:
                        owner.delivered.append((dict(self.headers), {"body": body}))
                self.send_response(500 if first else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


class SseClient:
    """Reads ``GET /api/v1/video/events/stream`` with httpx on a thread; collects the events."""

    def __init__(self, url: str, headers: dict, params: dict | None = None):
        self.events: list[dict] = []
        self.ids: list[str] = []
        self.connected = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=None))
        self._thread = threading.Thread(target=self._read, args=(url, headers, params or {}), daemon=True)
        self._thread.start()

    def _read(self, url, headers, params) -> None:
        try:
            with self._client.stream("GET", url, headers=headers, params=params) as response:
                self.status = response.status_code
                self.content_type = response.headers.get("content-type", "")
                self.connected.set()
                kind, data, event_id = None, None, None
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                    elif line.startswith("id:"):
                        event_id = line[3:].strip()
                    elif line == "" and kind == "video_event" and data:
                        self.events.append(json.loads(data))
                        self.ids.append(event_id)
                        kind, data, event_id = None, None, None
        except httpx.HTTPError:
            pass  # closed by the test

    def close(self) -> None:
        self._client.close()


def test_live_events_reach_sse_clients_and_webhooks_once_each(server, admin, watchlist, abc_video):
    receiver = WebhookReceiver()
    headers = {"x-admin-token": server.admin_token}
    everything = SseClient(f"{server.url}/api/v1/video/events/stream", headers)
    only_a = SseClient(f"{server.url}/api/v1/video/events/stream", headers, {"subject": PERSON_A})
    assert everything.connected.wait(10) and only_a.connected.wait(10)
    assert everything.status == 200 and everything.content_type.startswith("text/event-stream")
    try:
        stream = admin.add_stream(str(abc_video), watchlist_service_id=watchlist["service"]["id"], mode="realtime",
                                  max_fps=5, webhook_url=receiver.url)
        secret = stream["webhook_secret"]
        assert secret and "webhook_secret" not in admin.get_stream(stream["id"])
        # live: the first event arrives while the clip is still playing
        wait_for(lambda: everything.events, 10, message="the first live event")
        assert admin.get_stream(stream["id"])["status"]["state"] == "running"
        wait_for_state(admin, stream["id"], {"finished", "failed"})
        stored = admin.list_events(stream=stream["id"])
        appeared = [e for e in stored if e["reason"] == "appeared"]
        assert len(appeared) == len(ABC_TRACKS)
        wait_for(lambda: len([e for e in everything.events if e["stream_id"] == stream["id"]]) == len(stored), 10,
                 message="every event over SSE")
        mine = [e for e in everything.events if e["stream_id"] == stream["id"]]
        assert sorted(e["id"] for e in mine) == sorted(e["id"] for e in stored)
        assert [e["id"] for e in mine] == sorted(e["id"] for e in mine), "in order"
        assert {str(e["id"]) for e in mine} <= set(everything.ids)
        assert {e["id"] for e in only_a.events if e["stream_id"] == stream["id"]} == \
            {e["id"] for e in stored if e["subject"] == PERSON_A}

        # webhooks: every event delivered exactly once, after one failed attempt, correctly signed
        wait_for(lambda: len(receiver.delivered) >= len(stored), 30, message="every webhook delivery")
        delivered_ids = [headers_[EVENT_ID_HEADER] for headers_, _ in receiver.delivered]
        assert sorted(delivered_ids) == sorted(str(e["id"]) for e in stored)
        assert all(receiver.attempts[str(e["id"])] == 2 for e in stored)
        for headers_, body in receiver.delivered:
            assert verify_signature(secret, headers_[TIMESTAMP_HEADER], body["body"], headers_[SIGNATURE_HEADER])
            assert json.loads(body["body"])["id"] == int(headers_[EVENT_ID_HEADER])
    finally:
        everything.close()
        only_a.close()
        receiver.server.shutdown()

    # a client that reconnects with Last-Event-ID first gets what it missed
    ids = sorted(e["id"] for e in stored)
    replay = SseClient(f"{server.url}/api/v1/video/events/stream",
                       {**headers, "Last-Event-ID": str(ids[-3])}, {"stream": stream["id"]})
    try:
        wait_for(lambda: len(replay.events) >= 2, 10, message="replayed events")
        assert [e["id"] for e in replay.events] == ids[-2:]
    finally:
        replay.close()


@pytest.mark.parametrize("body, message", [
    ({"source_url": "ftp://camera/stream"}, "unsupported source URL scheme"),
    ({"source_url": "videos/relative.mp4"}, "neither an absolute file path nor a URL"),
    ({"source_url": "/v.mp4", "max_fps": -1}, "max_fps"),
    ({"source_url": "/v.mp4", "max_fps": 500}, "max_fps"),
    ({"source_url": "/v.mp4", "max_fps": "fast"}, "max_fps"),
    ({"source_url": "/v.mp4", "roi": [0.6, 0.1, 0.4, 0.9]}, "roi"),
    ({"source_url": "/v.mp4", "roi": [0, 0, 1]}, "roi"),
    ({"source_url": "/v.mp4", "mode": "sometimes"}, "unknown mode"),
    ({"source_url": "/v.mp4", "min_face_size": -5}, "min_face_size"),
    ({"source_url": "/v.mp4", "webhook_url": "file:///etc/passwd"}, "webhook_url"),
    ({"source_url": "/v.mp4", "colour": "red"}, "colour"),
    ({"source_url": "/v.mp4", "watchlist_service_id": 999999}, "unknown watchlist service 999999"),
])
def test_bad_stream_settings_are_client_errors(server, admin, body, message):
    response = httpx.post(f"{server.url}/api/v1/video/streams", json=body, headers={"x-admin-token": server.admin_token})
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


def test_keys_streams_changes_and_deletion(server, admin, watchlist, tmp_path):
    application = watchlist["application"]
    detection = admin.create_service(application["id"], "video-detection", "detection")
    video = admin.create_service(application["id"], "cameras", "video")
    with pytest.raises(FaceApiError) as not_recognition:
        admin.add_stream("/v.mp4", watchlist_service_id=detection["id"])
    assert not_recognition.value.status == 400 and "must be a recognition service" in not_recognition.value.message
    anonymous = httpx.get(f"{server.url}/api/v1/video/streams")
    assert anonymous.status_code == 401
    wrong_key = httpx.get(f"{server.url}/api/v1/video/streams", headers={"x-api-key": detection["api_key"]})
    assert wrong_key.status_code == 403

    # a video key manages its own streams only; a camera that is not there yet is waited for (reconnecting),
    # with the reason's detail for the admin only
    cameras = FaceClient(server.url, api_key=video["api_key"])
    own = cameras.add_stream(f"http://127.0.0.1:{free_port()}/later.mjpg",
                             watchlist_service_id=watchlist["service"]["id"], max_fps=2)
    assert own["owner_service_id"] == video["id"]
    admins = admin.add_stream(str(tmp_path / "later.mp4"), enabled=False)
    assert [s["id"] for s in cameras.list_streams()] == [own["id"]]
    with pytest.raises(FaceApiError) as hidden:
        cameras.get_stream(admins["id"])
    assert hidden.value.status == 404
    reconnecting = wait_for_state(cameras, own["id"], {"reconnecting"}, timeout=30)
    assert reconnecting["status"]["reason"] == "the source cannot be reached or read at the moment; retrying"
    assert "Connection refused" in admin.get_stream(own["id"])["status"]["reason"]
    assert admin.get_stream(admins["id"])["status"]["state"] == "stopped"

    # changes take effect without a restart: a disabled stream's worker goes away, a changed one is replaced
    workers = {name for name in running_workers() if name.startswith(f"video-worker-{own['id']}-")}
    assert len(workers) == 1
    assert cameras.update_stream(own["id"], max_fps=4)["max_fps"] == 4
    replaced = {name for name in running_workers() if name.startswith(f"video-worker-{own['id']}-")}
    assert len(replaced) == 1 and replaced != workers
    cameras.update_stream(own["id"], enabled=False)
    wait_for(lambda: not any(n.startswith(f"video-worker-{own['id']}-") for n in running_workers()), 20,
             message="the disabled stream's worker to stop")
    assert wait_for_state(cameras, own["id"], {"stopped"}, timeout=10)["enabled"] is False
    with pytest.raises(FaceApiError) as bad_patch:
        cameras.update_stream(own["id"], roi=[0.5, 0.5, 0.2, 0.2])
    assert bad_patch.value.status == 400

    cameras.delete_stream(own["id"])
    admin.delete_stream(admins["id"])
    with pytest.raises(FaceApiError) as gone:
        admin.get_stream(own["id"])
    assert gone.value.status == 404
    assert not any(n.startswith(f"video-worker-{own['id']}-") for n in running_workers())
    assert ray.is_initialized()


def test_cli_adds_lists_and_removes_streams(server, tmp_path):
    def faces(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "faces_cli.main", "video", *args, "--url", server.url,
                               "--admin-token", server.admin_token], capture_output=True, text=True, timeout=60)

    added = faces("add", str(tmp_path / "door.mp4"), "--name", "door", "--fps", "2", "--mode", "overall",
                  "--roi", "0,0.2,1,1", "--disabled", "--json")
    assert added.returncode == 0, added.stderr
    stream = json.loads(added.stdout)
    assert (stream["name"], stream["max_fps"], stream["mode"], stream["roi"], stream["enabled"]) == \
        ("door", 2.0, "overall", [0.0, 0.2, 1.0, 1.0], False)
    listed = faces("list")
    assert listed.returncode == 0 and f"{stream['id']:>4}  " in listed.stdout and "door.mp4" in listed.stdout
    bad = faces("add", "ftp://camera/1")
    assert bad.returncode == 1 and "unsupported source URL scheme" in bad.stderr
    removed = faces("rm", str(stream["id"]))
    assert removed.returncode == 0 and f"deleted stream {stream['id']}" in removed.stdout
    assert str(tmp_path / "door.mp4") not in faces("list").stdout
