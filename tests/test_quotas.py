"""Quotas and rate limits per service on the running platform (two ingress replicas behind HAProxy):
requests per second (429 with Retry-After, other services unaffected), faces, streams, live-event
(SSE) connections per service and per replica, event media bytes, and video workers sharing PostgreSQL
connections."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timezone

import asyncpg
import httpx
import pytest
import ray

from actors.video_recorder import POOL_SIZE, ensure_recorder
from serve_app.client import FaceApiError, FaceClient
from serve_app.context import INGRESS_APPLICATION
from video_samples import wait_for

RECOGNITION = "/api/v1/recognition"
SSE_PATH = "/api/v1/video/events/stream"


@pytest.fixture(scope="module")
def application(admin) -> dict:
    return admin.create_application("quotas")


def new_service(admin: FaceClient, application: dict, name: str, kind: str) -> tuple[dict, str]:
    service = admin.create_service(application["id"], name, kind)
    return service, service["api_key"]


def test_quotas_are_set_and_read_through_the_admin_api(admin, application, server):
    service, _ = new_service(admin, application, "settable", "recognition")
    defaults = admin.get_quotas(service["id"])
    assert defaults["custom"] == [] and defaults["faces"] == server.settings.quota_faces
    changed = admin.set_quotas(service["id"], faces=10, requests_per_s=3.5)
    assert (changed["faces"], changed["requests_per_s"], changed["custom"]) == (10, 3.5, ["faces", "requests_per_s"])
    back = admin.set_quotas(service["id"], faces=None)
    assert back["faces"] == server.settings.quota_faces and back["custom"] == ["requests_per_s"]
    for bad in ({"faces": -1}, {"requests_per_s": 0}, {"streams": 2**40}, {"event_media_bytes": "lots"}):
        response = httpx.put(f"{server.url}/api/v1/admin/services/{service['id']}/quotas", json=bad,
                             headers={"x-admin-token": server.admin_token})
        assert response.status_code == 400, response.text
    with pytest.raises(FaceApiError) as missing:
        admin.get_quotas(2**70)
    assert missing.value.status == 404


def test_rate_limit_answers_429_with_retry_after_and_spares_other_services(admin, application, server):
    limited, limited_key = new_service(admin, application, "limited", "recognition")
    _, other_key = new_service(admin, application, "unlimited", "recognition")
    admin.set_quotas(limited["id"], requests_per_s=2)  # 1 per second on each of the 2 ingress replicas
    with httpx.Client(base_url=server.url, timeout=30) as http:
        def burst(key: str) -> list[httpx.Response]:
            return [http.get(f"{RECOGNITION}/faces", params={"size": 1}, headers={"x-api-key": key})
                    for _ in range(12)]

        limited_answers, other_answers = burst(limited_key), burst(other_key)
        refused = [r for r in limited_answers if r.status_code == 429]
        assert len(refused) >= 6 and {r.status_code for r in limited_answers} <= {200, 429}
        assert all(int(r.headers["retry-after"]) >= 1 and r.json()["code"] == 29 for r in refused)
        assert [r.status_code for r in other_answers] == [200] * 12
        time.sleep(max(int(r.headers["retry-after"]) for r in refused))
        assert http.get(f"{RECOGNITION}/faces", headers={"x-api-key": limited_key}).status_code == 200


def test_faces_quota_is_a_clear_client_error(admin, application, data_dir):
    service, key = new_service(admin, application, "small-gallery", "recognition")
    admin.set_quotas(service["id"], faces=1)
    photos = sorted((data_dir / "lfw-dev" / "Ari_Fleischer").glob("*.jpg"))
    api = FaceClient(str(admin.http.base_url), api_key=key)
    api.add_face(photos[0], subject="ari")
    with pytest.raises(FaceApiError) as refused:
        api.add_face(photos[1], subject="ari")
    assert refused.value.status == 403 and refused.value.code == 32 and "quota of 1 faces" in refused.value.message
    assert api.list_faces()["total_elements"] == 1


def test_streams_quota_of_a_video_service(admin, application):
    service, key = new_service(admin, application, "cameras", "video")
    admin.set_quotas(service["id"], streams=1)
    video = FaceClient(str(admin.http.base_url), api_key=key)
    first = video.add_stream("rtsp://127.0.0.1:1/none", enabled=False)
    with pytest.raises(FaceApiError) as refused:
        video.add_stream("rtsp://127.0.0.1:1/other", enabled=False)
    assert refused.value.status == 403 and refused.value.code == 32
    video.delete_stream(first["id"])
    video.delete_stream(video.add_stream("rtsp://127.0.0.1:1/other", enabled=False)["id"])


@contextlib.contextmanager
def sse_connections(url: str, headers: dict, count: int):
    """``count`` live-event connections opened one after the other; yields their responses."""
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(httpx.Client(timeout=httpx.Timeout(30, read=None)))
        yield [stack.enter_context(client.stream("GET", url, headers=headers)) for _ in range(count)]


def test_sse_connections_beyond_the_quota_get_429_and_free_slots_come_back(admin, application, server):
    service, key = new_service(admin, application, "watchers", "video")
    admin.set_quotas(service["id"], sse_connections=2)  # 1 on each of the 2 ingress replicas
    url, headers = f"{server.url}{SSE_PATH}", {"x-api-key": key}
    with sse_connections(url, headers, 3) as responses:
        statuses = [r.status_code for r in responses]
        assert statuses.count(429) >= 1 and statuses.count(200) <= 2 and set(statuses) <= {200, 429}
        refused = next(r for r in responses if r.status_code == 429)
        refused.read()
        assert refused.json()["code"] == 32 and int(refused.headers["retry-after"]) >= 1
        # the admin's own live events are another owner's slots
        with sse_connections(url, {"x-admin-token": server.admin_token}, 1) as (mine,):
            assert mine.status_code == 200

    def reopened() -> bool:
        with sse_connections(url, headers, 1) as (again,):
            return again.status_code == 200

    wait_for(reopened, 15, interval=0.5, message="closed live-event connections to free their slots")


def test_live_event_connections_cannot_take_every_request_slot(admin, application, server, lfw_image):
    """Each replica holds at most ``sse_connections_per_replica`` of them, far below its request slots."""
    _, key = new_service(admin, application, "still-served", "recognition")
    per_replica = server.settings.sse_connections_per_replica
    url, headers = f"{server.url}{SSE_PATH}", {"x-admin-token": server.admin_token}
    with sse_connections(url, headers, 2 * per_replica + 2) as responses:
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) <= 2 * per_replica and statuses.count(429) >= 2
        api = FaceClient(server.url, api_key=key)
        assert api.add_face(lfw_image, subject="abel")["subject"] == "abel"
        assert api.list_faces()["total_elements"] == 1


def test_many_streams_at_a_dead_source_share_a_few_postgres_connections(admin, application, server):
    async def connections() -> int:
        connection = await asyncpg.connect(server.settings.postgres_dsn)
        try:
            # every connection but the ingress replicas' (their pools grow with concurrent requests)
            return await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name <> $1", INGRESS_APPLICATION)
        finally:
            await connection.close()

    _, key = new_service(admin, application, "dead-cameras", "video")
    video = FaceClient(str(admin.http.base_url), api_key=key)
    ray.get(ensure_recorder(server.settings).connections.remote())  # its pool is open before counting
    before = asyncio.run(connections())
    streams = [video.add_stream(f"rtsp://127.0.0.1:1/camera-{i}") for i in range(8)]
    try:
        wait_for(lambda: all(video.get_stream(s["id"])["status"]["state"] == "reconnecting" for s in streams), 180,
                 interval=1, message="every worker to report its dead source")
        during = asyncio.run(connections())
        # one pool for every worker (it may grow to POOL_SIZE), not a connection per stream
        assert during - before < POOL_SIZE, f"{during - before} more PostgreSQL connections for 8 streams"
        assert admin.list_applications()  # the control plane answers
    finally:
        for stream in streams:
            video.delete_stream(stream["id"])


def test_event_media_beyond_the_quota_is_not_stored(admin, application, server):
    """The recorder lets a video service's streams store images until their bytes reach its quota."""
    service, key = new_service(admin, application, "media-capped", "video")
    admin.set_quotas(service["id"], event_media_bytes=5000)
    video = FaceClient(str(admin.http.base_url), api_key=key)
    stream = video.add_stream("rtsp://127.0.0.1:1/none", enabled=False)
    recorder = ensure_recorder(server.settings)
    now = datetime.now(timezone.utc)

    def add_event(media_bytes: int, crop_path: str | None) -> dict:
        ray.get(recorder.add_event.remote(service["id"], stream["id"], "t1", "appeared", now, now, (1, 2, 3, 4), 0.9,
                                          0.95, None, None, crop_path, None, media_bytes))
        return video.list_events(stream=stream["id"], limit=1)[0]

    assert ray.get(recorder.media_allowed.remote(service["id"]))
    with_image = add_event(6000, "x/crop.jpg")
    assert with_image["crop_url"] == f"/api/v1/video/events/{with_image['id']}/crop"
    assert not ray.get(recorder.media_allowed.remote(service["id"]))  # 6000 bytes stored, quota 5000
    without = add_event(0, None)
    assert without["crop_url"] is None and without["frame_url"] is None
    with pytest.raises(FaceApiError) as missing:
        video.event_crop(without["id"])
    assert missing.value.status == 404
    assert ray.get(recorder.media_allowed.remote(None))  # the admin's streams have no quota
    video.delete_stream(stream["id"])
