"""Video events' best shots as sightings: live MJPEG cameras on loopback, a stranger and an enrolled
person; each event links to its sighting in the watchlist service and, for the stranger, to the
identity of unknown faces that recognize's unknown faces of that person join too. Real Ray,
PostgreSQL, LanceDB, HTTP."""

from __future__ import annotations

import io

import cv2
from PIL import Image

from facevideo.synthetic import Appearance
from serve_app.client import FaceClient
from test_video_streams import SseClient
from video_samples import PERSON_A, MjpegServer, enroll_watchlist, photos, still, wait_for

STRANGER = "Vladimir_Putin"  # enrolled nowhere; several photos
TIMEOUT_S = 45


def test_camera_events_link_to_their_sightings_and_the_strangers_identity(server, admin, data_dir):
    watchlist = enroll_watchlist(admin, server.url, data_dir, "video-sightings")
    service = watchlist["service"]
    stranger_photos = photos(data_dir, STRANGER)
    stranger = MjpegServer(Appearance(cv2.imread(str(stranger_photos[0])), 0, 1e9, (0.5, 0.5), 200)).start()
    known = MjpegServer(Appearance(still(data_dir, PERSON_A, 1), 0, 1e9, (0.5, 0.5), 200)).start()
    live = SseClient(f"{server.url}/api/v1/video/events/stream", {"x-admin-token": server.admin_token})
    assert live.connected.wait(10)
    streams = []
    try:
        for camera in (stranger, known):
            streams.append(admin.add_stream(camera.url, watchlist_service_id=service["id"], mode="realtime",
                                            max_fps=5)["id"])
        first = {stream: wait_for(lambda s=stream: admin.list_events(stream=s), TIMEOUT_S,
                                  message=f"an event of stream {stream}")[-1] for stream in streams}
        wait_for(lambda: {e["id"] for e in live.events} >= {e["id"] for e in first.values()}, 10,
                 message="the events over SSE")
        unknown_event, known_event = first[streams[0]], first[streams[1]]
        assert unknown_event["subject"] is None and known_event["subject"] == PERSON_A
        assert unknown_event["sighting_id"] and known_event["sighting_id"]
        identity = unknown_event["identity_id"]
        assert isinstance(identity, int) and known_event["identity_id"] is None, "known subjects get no identity"
        # the same links in the API answer, the live stream, and the event as later read
        for event in (unknown_event, known_event):
            sent = next(e for e in live.events if e["id"] == event["id"])
            assert (sent["sighting_id"], sent["identity_id"]) == (event["sighting_id"], event["identity_id"])
            assert admin.get_event(event["id"]) == event

        with FaceClient(server.url, api_key=service["api_key"]) as recognition:
            # the stranger's identity lists the camera's sightings (source: the stream), with their crops
            by_id = {s["id"]: s for s in recognition.identity_sightings(identity, size=100)}
            assert unknown_event["sighting_id"] in by_id
            assert by_id[unknown_event["sighting_id"]]["source"] == f"stream:{streams[0]}"
            assert Image.open(io.BytesIO(recognition.sighting_image(unknown_event["sighting_id"]))).format == "JPEG"
            # another photo of the stranger, remembered by recognize, joins the camera's identity
            answer = recognition.recognize(stranger_photos[1], remember_unknowns=True)
            assert answer["result"][0]["unknown"] is True
            assert answer["result"][0]["sighting"]["identity"] == identity
            # the enrolled person's sighting is searchable by face, with its subject
            found = recognition.search_sightings(photos(data_dir, PERSON_A)[2], limit=5)
            match = next(m for m in found["result"][0] if m["id"] == known_event["sighting_id"])
            assert match["subject"] == PERSON_A and match["source"] == f"stream:{streams[1]}"
    finally:
        for stream in streams:
            admin.delete_stream(stream)
        stranger.stop()
        known.stop()
        live.close()
