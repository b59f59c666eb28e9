"""Client mistakes found by probing the running platform: each is a 4xx with a message, never a 500."""

from __future__ import annotations

import json

import httpx
import pytest

INT64_OVERFLOW = "99999999999999999999"
BAD_NAMES = {
    "blank": "   ",
    "nul": "ali\x00ce",
    "lone surrogate": "ali\ud800ce",
    "too long": "x" * 300,
}


@pytest.fixture(scope="module")
def setup(server, admin):
    application = admin.create_application("test-client-mistakes")
    recognition = admin.create_service(application["id"], "mistakes", "recognition")
    video = admin.create_service(application["id"], "mistakes-video", "video")
    return {"application": application, "recognition": recognition, "video": video}


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as session:
        yield session


def _json(value) -> bytes:
    """JSON as Python writes it: lone surrogates as \\ud800 escapes, which JSON decoders accept."""
    return json.dumps(value).encode()


def _assert_client_error(response: httpx.Response, status: int, what: str) -> None:
    assert response.status_code == status, (what, response.status_code, response.text[:300])
    body = response.json()
    assert body["message"] and body["code"], (what, body)
    assert "Traceback" not in body["message"], (what, body)


@pytest.mark.parametrize("kind", sorted(BAD_NAMES))
def test_bad_names_are_400_everywhere(http, server, setup, kind):
    name = BAD_NAMES[kind]
    admin = {"x-admin-token": server.admin_token, "content-type": "application/json"}
    key = {"x-api-key": setup["recognition"]["api_key"], "content-type": "application/json"}
    app_id, service_id = setup["application"]["id"], setup["recognition"]["id"]
    calls = {
        "create application": http.post("/api/v1/admin/applications", content=_json({"name": name}), headers=admin),
        "rename application": http.put(f"/api/v1/admin/applications/{app_id}", content=_json({"name": name}),
                                       headers=admin),
        "create service": http.post(f"/api/v1/admin/applications/{app_id}/services",
                                    content=_json({"name": name, "type": "detection"}), headers=admin),
        "rename service": http.put(f"/api/v1/admin/services/{service_id}", content=_json({"name": name}),
                                   headers=admin),
        "add subject": http.post("/api/v1/recognition/subjects", content=_json({"subject": name}), headers=key),
        "rename subject": http.put("/api/v1/recognition/subjects/someone", content=_json({"subject": name}),
                                   headers=key),
        "create stream": http.post("/api/v1/video/streams", content=_json({"name": name,
                                                                            "source_url": "rtsp://camera/1"}),
                                   headers=admin),
    }
    for what, response in calls.items():
        _assert_client_error(response, 400, what)


def test_bad_names_in_queries_and_paths(http, setup):
    key = {"x-api-key": setup["recognition"]["api_key"]}
    add = http.post("/api/v1/recognition/faces", params={"subject": "   "}, files={"file": b"x"}, headers=key)
    _assert_client_error(add, 400, "add face, blank subject")
    add_nul = http.post("/api/v1/recognition/faces", params={"subject": "a\x00b"}, files={"file": b"x"}, headers=key)
    _assert_client_error(add_nul, 400, "add face, NUL in subject")
    for method in ("DELETE", "PUT"):
        response = http.request(method, "/api/v1/recognition/subjects/a%00b", headers=key,
                                json={"subject": "other"})
        assert response.status_code in (400, 404), (method, response.text)
    listed = http.get("/api/v1/recognition/faces", params={"subject": "a\x00b"}, headers=key)
    assert listed.status_code in (200, 400), listed.text
    deleted = http.delete("/api/v1/recognition/faces", params={"subject": "a\x00b"}, headers=key)
    assert deleted.status_code in (400, 404), deleted.text


@pytest.mark.parametrize("path", [
    f"/api/v1/admin/services/{INT64_OVERFLOW}",
    f"/api/v1/admin/services/{INT64_OVERFLOW}/stats",
    f"/api/v1/admin/services/{INT64_OVERFLOW}/index",
    f"/api/v1/admin/applications/{INT64_OVERFLOW}/services",
    f"/api/v1/admin/jobs/{INT64_OVERFLOW}",
    f"/api/v1/video/streams/{INT64_OVERFLOW}",
    f"/api/v1/video/events/{INT64_OVERFLOW}",
    f"/api/v1/video/events/{INT64_OVERFLOW}/crop",
    "/api/v1/admin/services/-9223372036854775809",
])
def test_ids_outside_int64_are_404(http, server, path):
    _assert_client_error(http.get(path, headers={"x-admin-token": server.admin_token}), 404, path)


def test_ids_outside_int64_in_bodies_and_filters_are_4xx(http, server):
    admin = {"x-admin-token": server.admin_token}
    job = http.post("/api/v1/admin/jobs/enroll", json={"service_id": int(INT64_OVERFLOW), "path": "/nowhere"},
                    headers=admin)
    assert job.status_code in (400, 404), job.text
    jobs = http.get("/api/v1/admin/jobs", params={"service_id": INT64_OVERFLOW}, headers=admin)
    assert jobs.status_code in (400, 404), jobs.text
    events = http.get("/api/v1/video/events", params={"stream": INT64_OVERFLOW}, headers=admin)
    assert events.status_code in (400, 404), events.text
    stream = http.post("/api/v1/video/streams", json={"source_url": "rtsp://camera/1",
                                                      "watchlist_service_id": int(INT64_OVERFLOW)}, headers=admin)
    assert stream.status_code in (400, 404), stream.text


def test_twenty_thousand_embeddings_are_refused_with_a_message(http, setup):
    body = {"embeddings": [[0.5] * 128] * 20000}
    response = http.post("/api/v1/recognition/embeddings/recognize", json=body,
                         headers={"x-api-key": setup["recognition"]["api_key"]})
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.json()["message"]


@pytest.mark.parametrize("service_id", ["0", "-1", "9223372036854775807", "9223372036854775808", INT64_OVERFLOW])
def test_stats_of_a_missing_service_is_404(http, server, service_id):
    response = http.get(f"/api/v1/admin/services/{service_id}/stats", headers={"x-admin-token": server.admin_token})
    _assert_client_error(response, 404, service_id)


def test_stats_of_each_service_type(http, server, setup, admin):
    for kind in ("recognition", "detection", "verification", "video"):
        service = admin.create_service(setup["application"]["id"], f"stats-{kind}", kind)
        response = http.get(f"/api/v1/admin/services/{service['id']}/stats",
                            headers={"x-admin-token": server.admin_token})
        assert response.status_code == 200, (kind, response.text)


def test_readyz_shows_no_exception_text(http):
    response = http.get("/readyz")
    assert response.status_code == 200
    for value in response.json()["checks"].values():
        assert "Traceback" not in json.dumps(value)
