"""Two applications side by side: every endpoint tried with a key of one and the ids of the other
(faces, subjects, images, streams, events, crops, jobs) answers only 403 or 404, and changes nothing.

Tenant A's stream is a real camera (MJPEG over HTTP on loopback) showing its enrolled person, so it has
a real event with a crop and a frame; tenant B's stream is a disabled one."""

from __future__ import annotations

import cv2
import httpx
import numpy as np
import pytest

from facevideo.synthetic import Appearance
from video_samples import MjpegServer, wait_for

EVENT_TIMEOUT_S = 60


def _camera_of(lfw_image: bytes) -> MjpegServer:
    """A camera showing the person enrolled in tenant A."""
    photo = cv2.imdecode(np.frombuffer(lfw_image, np.uint8), cv2.IMREAD_COLOR)
    return MjpegServer(Appearance(photo, 0, 1e9, (0.5, 0.5), 200), fps=5).start()


def _first_event(server, key: str, stream_id: int) -> dict:
    """Wait for the stream's first event; then stop the stream (its event stays)."""
    with httpx.Client(base_url=server.url, headers={"x-api-key": key}, timeout=30) as http:
        events = wait_for(lambda: http.get("/api/v1/video/events", params={"stream": stream_id}).json(),
                          EVENT_TIMEOUT_S, interval=0.5, message=f"an event of stream {stream_id}")
        assert http.patch(f"/api/v1/video/streams/{stream_id}", json={"enabled": False}).status_code == 200
    return events[-1]


@pytest.fixture(scope="module")
def tenants(server, admin, lfw_image):
    made = {}
    camera = _camera_of(lfw_image)
    for name in ("tenant-a", "tenant-b"):
        application = admin.create_application(f"test-cross-{name}")
        keys = {kind: admin.create_service(application["id"], f"{name}-{kind}", kind)
                for kind in ("recognition", "detection", "verification", "video")}
        face = httpx.post(f"{server.url}/api/v1/recognition/faces", params={"subject": f"{name}-person"},
                          files={"file": lfw_image}, headers={"x-api-key": keys["recognition"]["api_key"]},
                          timeout=60)
        assert face.status_code == 200, face.text
        source = ({"source_url": camera.url, "watchlist_service_id": keys["recognition"]["id"], "max_fps": 5,
                   "save_frame": True} if name == "tenant-a" else
                  {"source_url": "rtsp://127.0.0.1:9/none", "enabled": False})
        stream = httpx.post(f"{server.url}/api/v1/video/streams", json=source,
                            headers={"x-api-key": keys["video"]["api_key"]}, timeout=60)
        assert stream.status_code == 201, stream.text
        made[name] = {"keys": {kind: s["api_key"] for kind, s in keys.items()},
                      "services": {kind: s["id"] for kind, s in keys.items()},
                      "face": face.json()["image_id"], "subject": f"{name}-person", "stream": stream.json()["id"]}
    try:
        event = _first_event(server, made["tenant-a"]["keys"]["video"], made["tenant-a"]["stream"])
    finally:
        camera.stop()
    assert event["subject"] == "tenant-a-person" and event["frame_url"], event
    made["tenant-a"]["event"] = event["id"]
    return made


def _event_calls(event: int) -> list[tuple[str, str, dict]]:
    urls = (f"/api/v1/video/events/{event}", f"/api/v1/video/events/{event}/crop",
            f"/api/v1/video/events/{event}/frame")
    return [(kind, "GET", {"url": url}) for url in urls for kind in ("video", "recognition", "detection")]


def _calls(victim: dict, image: bytes) -> list[tuple[str, str, dict]]:
    face, subject, stream = victim["face"], victim["subject"], victim["stream"]
    return ([] if "event" not in victim else _event_calls(victim["event"])) + [
        ("recognition", "GET", {"url": f"/api/v1/recognition/faces/{face}/img"}),
        ("recognition", "DELETE", {"url": f"/api/v1/recognition/faces/{face}"}),
        ("recognition", "POST", {"url": f"/api/v1/recognition/faces/{face}/verify", "files": {"file": image}}),
        ("recognition", "POST", {"url": f"/api/v1/recognition/embeddings/faces/{face}/verify",
                                 "json": {"embeddings": [[0.5] * 128]}}),
        ("recognition", "PUT", {"url": f"/api/v1/recognition/subjects/{subject}", "json": {"subject": "stolen"}}),
        ("recognition", "DELETE", {"url": f"/api/v1/recognition/subjects/{subject}"}),
        ("recognition", "DELETE", {"url": "/api/v1/recognition/faces", "params": {"subject": subject}}),
        ("video", "GET", {"url": f"/api/v1/video/streams/{stream}"}),
        ("video", "PATCH", {"url": f"/api/v1/video/streams/{stream}", "json": {"max_fps": 1}}),
        ("video", "DELETE", {"url": f"/api/v1/video/streams/{stream}"}),
        ("detection", "GET", {"url": f"/api/v1/video/streams/{stream}"}),
        ("detection", "GET", {"url": "/api/v1/admin/services/" + str(victim["services"]["recognition"])}),
        ("recognition", "GET", {"url": "/api/v1/admin/jobs"}),
        ("recognition", "GET", {"url": "/api/v1/admin/jobs/1"}),
        ("recognition", "GET", {"url": f"/api/v1/admin/services/{victim['services']['recognition']}/quotas"}),
        ("video", "PUT", {"url": f"/api/v1/admin/services/{victim['services']['video']}/quotas",
                          "json": {"streams": 1000}}),
        ("recognition", "GET", {"url": f"/api/v1/admin/services/{victim['services']['recognition']}/index"}),
        ("recognition", "POST", {"url": f"/api/v1/admin/services/{victim['services']['recognition']}/index/rebuild"}),
        ("video", "POST", {"url": "/api/v1/video/streams", "json": {
            "source_url": "rtsp://127.0.0.1:9/none", "enabled": False,
            "watchlist_service_id": victim["services"]["recognition"]}}),
    ]


def _refusals(url: str) -> tuple[int, ...]:
    if url.startswith("/api/v1/admin/"):
        return 401, 403  # a service key is no admin credential
    if url == "/api/v1/video/streams":
        return 400, 403, 404  # another application's watchlist is a refused value
    return 403, 404


def test_other_tenants_ids_are_403_or_404(server, tenants, lfw_image):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for attacker, victim in (("tenant-a", "tenant-b"), ("tenant-b", "tenant-a")):
            for kind, method, request in _calls(tenants[victim], lfw_image):
                response = http.request(method, headers={"x-api-key": tenants[attacker]["keys"][kind]}, **request)
                assert response.status_code in _refusals(request["url"]), \
                    (attacker, kind, method, request["url"], response.text)


def test_listings_show_only_the_own_tenant(server, tenants):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for name, other in (("tenant-a", "tenant-b"), ("tenant-b", "tenant-a")):
            keys = tenants[name]["keys"]
            faces = http.get("/api/v1/recognition/faces", headers={"x-api-key": keys["recognition"]}).json()
            assert {f["image_id"] for f in faces["faces"]} == {tenants[name]["face"]}
            subjects = http.get("/api/v1/recognition/subjects", headers={"x-api-key": keys["recognition"]}).json()
            assert subjects["subjects"] == [tenants[name]["subject"]]
            streams = http.get("/api/v1/video/streams", headers={"x-api-key": keys["video"]}).json()
            assert [s["id"] for s in streams] == [tenants[name]["stream"]]
            events = http.get("/api/v1/video/events", params={"stream": tenants[other]["stream"]},
                              headers={"x-api-key": keys["video"]})
            assert events.status_code == 200 and events.json() == []
            for params in ({}, {"subject": tenants[other]["subject"]}, {"after_id": 0, "limit": 1000}):
                seen = http.get("/api/v1/video/events", params=params, headers={"x-api-key": keys["video"]})
                assert seen.status_code == 200
                assert {e["stream_id"] for e in seen.json()} <= {tenants[name]["stream"]}, (name, params)
                assert tenants[other].get("event") not in {e["id"] for e in seen.json()}, (name, params)
        owner = http.get("/api/v1/video/events", headers={"x-api-key": tenants["tenant-a"]["keys"]["video"]}).json()
        assert tenants["tenant-a"]["event"] in {e["id"] for e in owner}


def test_bulk_deletes_and_live_events_skip_other_tenants_ids(server, tenants):
    """Endpoints that take many ids or filter a feed answer 200 for the caller's own part: the other
    tenant's ids delete nothing and its events never appear, not even replayed from the first id."""
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for attacker, victim in (("tenant-a", "tenant-b"), ("tenant-b", "tenant-a")):
            keys = tenants[attacker]["keys"]
            deleted = http.post("/api/v1/recognition/faces/delete", json=[tenants[victim]["face"]],
                                headers={"x-api-key": keys["recognition"]})
            assert deleted.status_code == 200 and deleted.json() == []
            seen = b""
            with http.stream("GET", "/api/v1/video/events/stream", params={"stream": tenants[victim]["stream"]},
                             headers={"x-api-key": keys["video"], "last-event-id": "0"}, timeout=3) as feed:
                assert feed.status_code in (200, 403, 404)
                try:
                    for chunk in feed.iter_bytes():
                        seen += chunk
                except httpx.ReadTimeout:  # the feed stays open: what it replayed has arrived
                    pass
            assert b"video_event" not in seen, seen[:300]  # the victim's stream's events: none replayed


def test_nothing_of_the_victims_changed(server, tenants):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for tenant in tenants.values():
            key = {"x-api-key": tenant["keys"]["recognition"]}
            assert http.get(f"/api/v1/recognition/faces/{tenant['face']}/img", headers=key).status_code == 200
            assert http.get("/api/v1/recognition/subjects", headers=key).json()["subjects"] == [tenant["subject"]]
            stream = http.get(f"/api/v1/video/streams/{tenant['stream']}", headers={"x-api-key": tenant["keys"]["video"]})
            assert stream.status_code == 200 and stream.json()["max_fps"] != 1
            if "event" in tenant:  # the event and its media are there for their owner
                for _, _, request in _event_calls(tenant["event"])[::3]:
                    assert http.get(request["url"], headers={"x-api-key": tenant["keys"]["video"]}).status_code == 200
