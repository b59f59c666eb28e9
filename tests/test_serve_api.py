"""The REST API over real HTTP against the running Serve application (real Ray, PostgreSQL, LanceDB)."""

from __future__ import annotations

import base64
import io
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from facecore.similarity import similarity_from_cosine
from serve_app.client import FaceApiError, FaceClient


@pytest.fixture(scope="module")
def app_services(server, admin):
    application = admin.create_application("test-api")
    keys = {kind: admin.create_service(application["id"], f"{kind}-svc", kind)
            for kind in ("recognition", "detection", "verification")}
    return {kind: service["api_key"] for kind, service in keys.items()} | {"application": application,
                                                                            "services": keys}


def client(server, key: str) -> FaceClient:
    return FaceClient(server.url, api_key=key)


def people(data_dir) -> dict[str, list]:
    folders = sorted(p for p in (data_dir / "lfw-dev").iterdir() if p.is_dir())
    return {folder.name: sorted(folder.glob("*.jpg")) for folder in folders}


def test_keys_work_only_for_their_own_service_type(server, admin, app_services, lfw_image):
    detection = client(server, app_services["detection"])
    assert detection.detect(lfw_image)["result"]
    with pytest.raises(FaceApiError) as wrong_type:
        detection.recognize(lfw_image)
    assert wrong_type.value.status == 403 and "detection" in wrong_type.value.message
    with pytest.raises(FaceApiError) as verification_key:
        client(server, app_services["verification"]).detect(lfw_image)
    assert verification_key.value.status == 403
    with pytest.raises(FaceApiError) as unknown:
        client(server, "00000000-0000-0000-0000-000000000000").detect(lfw_image)
    assert unknown.value.status == 401
    missing = httpx.post(f"{server.url}/api/v1/detection/detect", files={"file": lfw_image})
    assert missing.status_code == 401 and missing.json()["message"] == "missing x-api-key header"


def test_regenerated_key_replaces_the_old_one(server, admin, app_services, lfw_image):
    application = app_services["application"]
    service = admin.create_service(application["id"], "rotating", "detection")
    old_key = service["api_key"]
    assert client(server, old_key).detect(lfw_image)["result"]
    new_key = admin.regenerate_key(service["id"])["api_key"]
    assert new_key != old_key
    with pytest.raises(FaceApiError) as rejected:
        client(server, old_key).detect(lfw_image)
    assert rejected.value.status == 401
    assert client(server, new_key).detect(lfw_image)["result"]


def test_admin_api_needs_the_token(server):
    anonymous = httpx.get(f"{server.url}/api/v1/admin/applications")
    wrong = httpx.get(f"{server.url}/api/v1/admin/applications", headers={"x-admin-token": "nope"})
    assert anonymous.status_code == 401 and wrong.status_code == 401
    bearer = httpx.get(f"{server.url}/api/v1/admin/applications",
                       headers={"Authorization": f"Bearer {server.admin_token}"})
    assert bearer.status_code == 200 and isinstance(bearer.json(), list)


def test_enroll_and_recognise_lfw_people(server, admin, app_services, data_dir):
    """Rank-1 on a different photo of each enrolled person; strangers come back unknown."""
    application = app_services["application"]
    key = admin.create_service(application["id"], "lfw", "recognition")["api_key"]
    api = client(server, key)
    everyone = people(data_dir)
    enrolled = {name: files for name, files in everyone.items() if len(files) >= 2}
    strangers = {name: files for name, files in everyone.items() if len(files) == 1}
    assert len(enrolled) == 150 and len(strangers) == 12
    with ThreadPoolExecutor(8) as pool:
        added = list(pool.map(lambda item: api.add_face(item[1][0], subject=item[0]), enrolled.items()))
        assert all(a["subject"] == name for a, name in zip(added, enrolled))
        known = list(pool.map(lambda item: api.recognize(item[1][1])["result"][0], enrolled.items()))
        unknown = list(pool.map(lambda item: api.recognize(item[1][0])["result"][0], strangers.items()))
    assert api.list_faces(size=1)["total_elements"] == 150
    correct = sum(1 for name, face in zip(enrolled, known) if face["subjects"] and face["subjects"][0]["subject"] == name)
    assert correct / len(enrolled) >= 0.97
    assert sum(face["unknown"] for face in unknown) / len(strangers) >= 0.9
    assert all(face["subjects"] == [] for face in unknown if face["unknown"])
    raw = api.recognize(enrolled["Ari_Fleischer"][1], threshold=0.0, prediction_count=3)["result"][0]
    assert len(raw["subjects"]) == 3 and raw["subjects"][0]["subject"] == "Ari_Fleischer"
    assert raw["subjects"][0]["similarity"] >= raw["subjects"][1]["similarity"]


def test_detection_and_verification_agree_with_facecore(server, app_services, pipeline, data_dir):
    group_photo = (data_dir / "group" / "dlib_2008_001322.jpg").read_bytes()
    detected = client(server, app_services["detection"]).detect(
        group_photo, face_plugins="landmarks,pose,quality,calculator", status=True)
    local = pipeline.analyze([group_photo])[0]
    assert len(detected["result"]) == len(local) == 3
    for remote, face in zip(detected["result"], local):
        box = remote["box"]
        assert np.allclose([box["x_min"], box["y_min"], box["x_max"], box["y_max"]], face.box, atol=1.0)
        assert np.dot(remote["embedding"], face.embedding) > 0.9999
        assert set(remote) >= {"landmarks", "pose", "quality", "execution_time"}
        assert "detector" in remote["execution_time"]
    assert set(detected["plugins_versions"]) >= {"detector", "calculator", "pose", "quality", "landmarks"}
    assert detected["plugins_versions"]["backend"] == str(pipeline.embedder.description)
    assert "quality" in detected["result"][0] and "quality" not in detect_without_quality(server, app_services,
                                                                                      group_photo)

    first = data_dir / "lfw-dev" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    second = data_dir / "lfw-dev" / "Abel_Pacheco" / "Abel_Pacheco_0002.jpg"
    verified = client(server, app_services["verification"]).verify(first, second)["result"][0]
    a, b = pipeline.embed([first.read_bytes(), second.read_bytes()], limit=1)
    expected = float(similarity_from_cosine(float(a[0] @ b[0])))
    assert abs(verified["face_matches"][0]["similarity"] - expected) < 1e-3
    assert "box" in verified["source_image_face"]


def test_base64_json_bodies(server, app_services, lfw_image):
    encoded = base64.b64encode(lfw_image).decode()
    response = httpx.post(f"{server.url}/api/v1/detection/detect", json={"file": encoded},
                          headers={"x-api-key": app_services["detection"]})
    assert response.status_code == 200 and len(response.json()["result"]) >= 1
    verify = httpx.post(f"{server.url}/api/v1/verification/verify",
                        json={"source_image": encoded, "target_image": encoded},
                        headers={"x-api-key": app_services["verification"]})
    assert verify.status_code == 200
    assert verify.json()["result"][0]["face_matches"][0]["similarity"] > 0.99


def test_subjects_faces_paging_and_deletes(server, admin, app_services, data_dir):
    key = admin.create_service(app_services["application"]["id"], "crud", "recognition")["api_key"]
    api = client(server, key)
    photos = people(data_dir)
    ids = {name: [api.add_face(p, subject=name)["image_id"] for p in photos[name][:2]]
           for name in ("Ari_Fleischer", "Abel_Pacheco", "Alvaro_Uribe")}
    assert api.list_subjects()["subjects"] == ["Abel_Pacheco", "Alvaro_Uribe", "Ari_Fleischer"]
    pages = [api.list_faces(page=page, size=4) for page in range(2)]
    assert pages[0]["total_elements"] == 6 and pages[0]["total_pages"] == 2
    assert len(pages[0]["faces"]) == 4 and len(pages[1]["faces"]) == 2
    assert {f["image_id"] for p in pages for f in p["faces"]} == {i for v in ids.values() for i in v}
    assert api.list_faces(subject="Abel_Pacheco")["total_elements"] == 2

    crop = api.face_image(ids["Ari_Fleischer"][0])
    assert Image.open(io.BytesIO(crop)).size == (112, 112)

    assert api.rename_subject("Ari_Fleischer", "Ari") == {"updated": True}
    assert api.list_faces(subject="Ari")["total_elements"] == 2
    api.rename_subject("Ari", "Abel_Pacheco")  # merge
    assert api.list_subjects()["subjects"] == ["Abel_Pacheco", "Alvaro_Uribe"]
    assert api.list_faces(subject="Abel_Pacheco")["total_elements"] == 4

    deleted = api.delete_face(ids["Alvaro_Uribe"][0])
    assert deleted == {"image_id": ids["Alvaro_Uribe"][0], "subject": "Alvaro_Uribe"}
    with pytest.raises(FaceApiError) as gone:
        api.delete_face(ids["Alvaro_Uribe"][0])
    assert gone.value.status == 404
    bulk = api.delete_faces_by_id([ids["Abel_Pacheco"][0], "no-such-face"])
    assert [f["image_id"] for f in bulk] == [ids["Abel_Pacheco"][0]]
    assert api.delete_faces(subject="Abel_Pacheco") == {"deleted": 3}
    assert api.delete_subject("Alvaro_Uribe") == {"subject": "Alvaro_Uribe"}
    with pytest.raises(FaceApiError) as unknown_subject:
        api.delete_subject("Alvaro_Uribe")
    assert unknown_subject.value.status == 404
    assert api.list_faces()["total_elements"] == 0
    api.add_subject("empty")
    assert api.delete_all_subjects() == {"deleted": 2}


def test_embeddings_endpoints(server, admin, app_services, data_dir, pipeline):
    key = admin.create_service(app_services["application"]["id"], "emb", "recognition")["api_key"]
    api = client(server, key)
    photos = people(data_dir)["Alvaro_Uribe"]
    image_id = api.add_face(photos[0], subject="uribe")["image_id"]
    probe = pipeline.embed([photos[1].read_bytes()], limit=1)[0][0].tolist()
    found = api.recognize_embeddings([probe])["result"][0]
    assert found["similarities"][0]["subject"] == "uribe" and not found["unknown"]
    verified = api.verify_face_embeddings(image_id, [probe])["result"][0]
    assert abs(verified["similarity"] - found["similarities"][0]["similarity"]) < 1e-4
    by_image = api.verify_face(image_id, photos[1])["result"][0]
    assert abs(by_image["similarity"] - verified["similarity"]) < 1e-3
    other = client(server, app_services["verification"]).verify_embeddings(probe, [probe, [-v for v in probe]])
    assert other["result"][0]["similarity"] > 0.99 and other["result"][1]["similarity"] < 0.05


def test_two_ingress_replicas_see_each_others_faces_at_once(server, admin, app_services, data_dir):
    key = admin.create_service(app_services["application"]["id"], "sync", "recognition")["api_key"]
    photos = people(data_dir)["Arianna_Huffington"]
    replicas = Counter()
    with httpx.Client(base_url=server.url, headers={"x-api-key": key}, timeout=60) as http:
        for attempt in range(12):
            subject = f"person-{attempt}"
            added = http.post("/api/v1/recognition/faces", params={"subject": subject},
                              files={"file": photos[0].read_bytes()})
            assert added.status_code == 200
            found = http.post("/api/v1/recognition/recognize", files={"file": photos[1].read_bytes()},
                              params={"prediction_count": 20})
            assert found.status_code == 200
            assert subject in [s["subject"] for s in found.json()["result"][0]["subjects"]]
            replicas[(added.headers["x-faces-replica"], found.headers["x-faces-replica"])] += 1
    assert any(adder != finder for adder, finder in replicas), "requests never crossed replicas"


def test_service_stats_count_requests(server, admin, app_services, lfw_image):
    service = app_services["services"]["detection"]
    def total() -> int:
        return sum(row["requests"] for row in admin.service_stats(service["id"])["requests"])

    before = total()
    client(server, app_services["detection"]).detect(lfw_image)
    deadline = time.monotonic() + 15  # every replica writes its counts every 2 s
    while total() < before + 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert total() >= before + 1


def detect_without_quality(server, app_services, image: bytes) -> dict:
    return client(server, app_services["detection"]).detect(image, face_plugins="pose")["result"][0]


def test_health_and_metrics(server, pipeline):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    running = pipeline.embedder.description  # the same default settings: the same backend
    models = ready.json()["checks"]["models"]
    assert (models["backend"], models["device"], models["precision"]) == (
        running.backend, running.device, running.precision)
    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.status_code == 200 and "faces_http_requests_total" in metrics.text
    docs = httpx.get(f"{server.url}/openapi.json").json()
    assert "/api/v1/recognition/recognize" in docs["paths"]
