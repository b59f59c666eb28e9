"""Bad input over HTTP: the right 4xx with a message every time, and the service stays up."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from image_samples import encode, png_header_only


@pytest.fixture(scope="module")
def keys(server, admin):
    application = admin.create_application("test-bad-input")
    return {kind: admin.create_service(application["id"], kind, kind)["api_key"]
            for kind in ("recognition", "detection", "verification")}


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as session:
        yield session


def blank_png() -> bytes:
    return encode(Image.new("RGB", (64, 64), (120, 120, 120)), "PNG")


def corpus(lfw_image: bytes) -> dict[str, tuple[bytes, int, int]]:
    """name -> (upload, expected status, expected code)."""
    cmyk = encode(Image.open(io.BytesIO(lfw_image)).convert("CMYK"), "JPEG")
    return {
        "empty": (b"", 400, 11),
        "text": (b"just some text" * 20, 400, 11),
        "truncated jpeg": (lfw_image[: len(lfw_image) // 2], 400, 11),
        "1x1 image": (encode(Image.new("RGB", (1, 1)), "PNG"), 400, 28),
        "30000x30000 png header": (png_header_only(30000, 30000), 413, 13),
        "ppm": (encode(Image.new("RGB", (8, 8)), "PPM"), 400, 12),
        "blank image": (blank_png(), 400, 28),
        "cmyk face": (cmyk, 200, 0),
    }


def test_bad_images_on_every_image_endpoint(http, keys, lfw_image):
    endpoints = [("/api/v1/detection/detect", "detection", {}),
                 ("/api/v1/recognition/recognize", "recognition", {}),
                 ("/api/v1/recognition/faces", "recognition", {"subject": "someone"})]
    for path, kind, params in endpoints:
        for name, (upload, status, code) in corpus(lfw_image).items():
            response = http.post(path, params=params, files={"file": upload}, headers={"x-api-key": keys[kind]})
            assert response.status_code == status, (path, name, response.text)
            if status >= 400:
                body = response.json()
                assert body["code"] == code and body["message"], (path, name, body)


def test_wrong_content_types_and_missing_fields(http, keys, lfw_image):
    headers = {"x-api-key": keys["detection"]}
    raw = http.post("/api/v1/detection/detect", content=lfw_image, headers={**headers, "content-type": "image/jpeg"})
    assert raw.status_code == 415 and "multipart/form-data" in raw.json()["message"]
    no_type = http.post("/api/v1/detection/detect", content=b"x", headers=headers)
    assert no_type.status_code == 415
    wrong_field = http.post("/api/v1/detection/detect", files={"image": lfw_image}, headers=headers)
    assert wrong_field.status_code == 400 and "'file'" in wrong_field.json()["message"]
    bad_json = http.post("/api/v1/detection/detect", content=b"{not json", headers={**headers, "content-type": "application/json"})
    assert bad_json.status_code == 400
    bad_base64 = http.post("/api/v1/detection/detect", json={"file": "%%%not base64%%%"}, headers=headers)
    assert bad_base64.status_code == 400 and "base64" in bad_base64.json()["message"]
    one_image = http.post("/api/v1/verification/verify", files={"source_image": lfw_image},
                          headers={"x-api-key": keys["verification"]})
    assert one_image.status_code == 400 and "target_image" in one_image.json()["message"]
    no_subject = http.post("/api/v1/recognition/faces", files={"file": lfw_image},
                           headers={"x-api-key": keys["recognition"]})
    assert no_subject.status_code == 400 and "subject" in no_subject.json()["message"]


def test_oversized_body_is_413(http, keys, server):
    limit = server.settings.max_upload_bytes
    response = http.post("/api/v1/detection/detect", files={"file": b"\xff" * (limit + 1)},
                         headers={"x-api-key": keys["detection"]})
    assert response.status_code == 413 and response.json()["code"] == 13


@pytest.mark.parametrize("query", ["limit=-1", "limit=abc", "det_prob_threshold=2", "det_prob_threshold=x",
                                   "prediction_count=0", "face_plugins=age", "status=maybe", "threshold=-0.5"])
def test_bad_query_values(http, keys, lfw_image, query):
    response = http.post(f"/api/v1/recognition/recognize?{query}", files={"file": lfw_image},
                         headers={"x-api-key": keys["recognition"]})
    assert response.status_code == 400, response.text
    assert response.json()["message"]


def test_bad_paging_and_bodies(http, keys):
    headers = {"x-api-key": keys["recognition"]}
    assert http.get("/api/v1/recognition/faces", params={"page": -1}, headers=headers).status_code == 400
    assert http.get("/api/v1/recognition/faces", params={"size": 0}, headers=headers).status_code == 400
    assert http.post("/api/v1/recognition/faces/delete", json={"ids": 1}, headers=headers).status_code == 400
    assert http.post("/api/v1/recognition/subjects", json={"subject": ""}, headers=headers).status_code == 400
    short = http.post("/api/v1/recognition/embeddings/recognize", json={"embeddings": [[0.1, 0.2]]}, headers=headers)
    assert short.status_code == 400 and "128" in short.json()["message"]
    zero = http.post("/api/v1/recognition/embeddings/recognize", json={"embeddings": [[0.0] * 128]}, headers=headers)
    assert zero.status_code == 400
    missing_face = http.get("/api/v1/recognition/faces/does-not-exist/img", headers=headers)
    assert missing_face.status_code == 404 and missing_face.json()["code"] == 5
    assert http.get("/api/v1/no/such/route").status_code == 404


def test_admin_bad_input(http, server):
    headers = {"x-admin-token": server.admin_token}
    assert http.post("/api/v1/admin/applications", json={}, headers=headers).status_code == 400
    assert http.get("/api/v1/admin/services/999999", headers=headers).status_code == 404
    created = http.post("/api/v1/admin/applications", json={"name": "dup-app"}, headers=headers)
    assert created.status_code == 201
    assert http.post("/api/v1/admin/applications", json={"name": "dup-app"}, headers=headers).status_code == 409
    app_id = created.json()["id"]
    bad_type = http.post(f"/api/v1/admin/applications/{app_id}/services", json={"name": "x", "type": "magic"},
                         headers=headers)
    assert bad_type.status_code == 400


def test_service_is_still_up_after_the_corpus(http, keys, lfw_image):
    assert http.get("/healthz").status_code == 200
    ok = http.post("/api/v1/detection/detect", files={"file": lfw_image}, headers={"x-api-key": keys["detection"]})
    assert ok.status_code == 200 and ok.json()["result"]
