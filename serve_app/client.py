"""FaceClient: a Python client of the HTTP API, synchronous (``FaceClient``) and asynchronous
(``AsyncFaceClient``), on httpx.

    client = FaceClient("http://127.0.0.1:8000", api_key=recognition_key)
    client.add_face("alice.jpg", subject="alice")
    client.recognize("who.jpg")["result"][0]["subjects"]

Every API method is defined once, in :class:`_FaceApi`, as a description of the HTTP call; the two
clients differ only in how they send it. Errors raise :class:`FaceApiError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

Image = bytes | str | Path


class FaceApiError(Exception):
    """An error response; ``retry_after`` (seconds) when the server said when to try again (429, 503)."""

    def __init__(self, status: int, message: str, code: int | None, retry_after: float | None = None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after


@dataclass
class _Call:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    files: dict[str, bytes] | None = None
    admin: bool = False
    raw: bool = False


def _bytes(image: Image) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _params(**values) -> dict[str, Any]:
    return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in values.items() if v is not None}


class _FaceApi:
    """The API surface; ``_send`` is provided by the sync and async clients."""

    recognition = "/api/v1/recognition"

    def _send(self, call: _Call):
        raise NotImplementedError

    # recognition: faces
    def add_face(self, image: Image, subject: str, det_prob_threshold: float | None = None):
        return self._send(_Call("POST", f"{self.recognition}/faces", _params(subject=subject,
                          det_prob_threshold=det_prob_threshold), files={"file": _bytes(image)}))

    def list_faces(self, page: int = 0, size: int = 20, subject: str | None = None):
        return self._send(_Call("GET", f"{self.recognition}/faces", _params(page=page, size=size, subject=subject)))

    def delete_faces(self, subject: str | None = None):
        return self._send(_Call("DELETE", f"{self.recognition}/faces", _params(subject=subject)))

    def delete_face(self, image_id: str):
        return self._send(_Call("DELETE", f"{self.recognition}/faces/{image_id}"))

    def delete_faces_by_id(self, image_ids: list[str]):
        return self._send(_Call("POST", f"{self.recognition}/faces/delete", json=list(image_ids)))

    def face_image(self, image_id: str):
        return self._send(_Call("GET", f"{self.recognition}/faces/{image_id}/img", raw=True))

    def recognize(self, image: Image, limit: int = 0, prediction_count: int = 1,
                  det_prob_threshold: float | None = None, face_plugins: str | None = None,
                  status: bool = False, threshold: float | None = None, remember_unknowns: bool = False,
                  source: str | None = None):
        return self._send(_Call("POST", f"{self.recognition}/recognize", _params(
            limit=limit, prediction_count=prediction_count, det_prob_threshold=det_prob_threshold,
            face_plugins=face_plugins, status=status, threshold=threshold,
            remember_unknowns=remember_unknowns or None, source=source), files={"file": _bytes(image)}))

    def verify_face(self, image_id: str, image: Image, limit: int = 0, det_prob_threshold: float | None = None,
                    face_plugins: str | None = None):
        return self._send(_Call("POST", f"{self.recognition}/faces/{image_id}/verify", _params(
            limit=limit, det_prob_threshold=det_prob_threshold, face_plugins=face_plugins),
            files={"file": _bytes(image)}))

    def recognize_embeddings(self, embeddings: list[list[float]], prediction_count: int = 1,
                             threshold: float | None = None):
        return self._send(_Call("POST", f"{self.recognition}/embeddings/recognize",
                                _params(prediction_count=prediction_count, threshold=threshold),
                                json={"embeddings": embeddings}))

    def verify_face_embeddings(self, image_id: str, embeddings: list[list[float]]):
        return self._send(_Call("POST", f"{self.recognition}/embeddings/faces/{image_id}/verify",
                                json={"embeddings": embeddings}))

    # recognition: identities of unknown faces, and past sightings
    def list_identities(self, page: int = 0, size: int = 20, ignored: bool = False):
        return self._send(_Call("GET", f"{self.recognition}/identities", _params(page=page, size=size,
                                                                                 ignored=ignored)))

    def get_identity(self, identity: int):
        return self._send(_Call("GET", f"{self.recognition}/identities/{identity}"))

    def identity_sightings(self, identity: int, page: int = 0, size: int = 20):
        return self._send(_Call("GET", f"{self.recognition}/identities/{identity}/sightings",
                                _params(page=page, size=size)))

    def promote_identity(self, identity: int, subject: str, faces: int = 5):
        return self._send(_Call("POST", f"{self.recognition}/identities/{identity}/promote",
                                json={"subject": subject, "faces": faces}))

    def merge_identities(self, identity: int, other: int):
        return self._send(_Call("POST", f"{self.recognition}/identities/{identity}/merge", json={"identity": other}))

    def split_identity(self, identity: int, sighting_ids: list[str]):
        return self._send(_Call("POST", f"{self.recognition}/identities/{identity}/split",
                                json={"sighting_ids": list(sighting_ids)}))

    def ignore_identity(self, identity: int):
        return self._send(_Call("POST", f"{self.recognition}/identities/{identity}/ignore"))

    def sighting_image(self, sighting_id: str):
        return self._send(_Call("GET", f"{self.recognition}/sightings/{sighting_id}/img", raw=True))

    def search_sightings(self, image: Image, limit: int = 10, since: str | None = None, until: str | None = None,
                         source: str | None = None):
        return self._send(_Call("POST", f"{self.recognition}/sightings/search",
                                _params(limit=limit, since=since, until=until, source=source),
                                files={"file": _bytes(image)}))

    def search_sightings_embeddings(self, embeddings: list[list[float]], limit: int = 10, since: str | None = None,
                                    until: str | None = None, source: str | None = None):
        return self._send(_Call("POST", f"{self.recognition}/embeddings/sightings/search",
                                _params(limit=limit, since=since, until=until, source=source),
                                json={"embeddings": embeddings}))

    # recognition: subjects
    def add_subject(self, subject: str):
        return self._send(_Call("POST", f"{self.recognition}/subjects", json={"subject": subject}))

    def list_subjects(self):
        return self._send(_Call("GET", f"{self.recognition}/subjects"))

    def rename_subject(self, subject: str, new_name: str):
        return self._send(_Call("PUT", f"{self.recognition}/subjects/{subject}", json={"subject": new_name}))

    def delete_subject(self, subject: str):
        return self._send(_Call("DELETE", f"{self.recognition}/subjects/{subject}"))

    def delete_all_subjects(self):
        return self._send(_Call("DELETE", f"{self.recognition}/subjects"))

    # detection and verification services
    def detect(self, image: Image, limit: int = 0, det_prob_threshold: float | None = None,
               face_plugins: str | None = None, status: bool = False):
        return self._send(_Call("POST", "/api/v1/detection/detect", _params(
            limit=limit, det_prob_threshold=det_prob_threshold, face_plugins=face_plugins, status=status),
            files={"file": _bytes(image)}))

    def verify(self, source_image: Image, target_image: Image, limit: int = 0,
               det_prob_threshold: float | None = None, face_plugins: str | None = None):
        return self._send(_Call("POST", "/api/v1/verification/verify", _params(
            limit=limit, det_prob_threshold=det_prob_threshold, face_plugins=face_plugins),
            files={"source_image": _bytes(source_image), "target_image": _bytes(target_image)}))

    def verify_embeddings(self, source: list[float], targets: list[list[float]]):
        return self._send(_Call("POST", "/api/v1/verification/embeddings/verify",
                                json={"source": source, "targets": targets}))

    # admin
    def create_application(self, name: str):
        return self._send(_Call("POST", "/api/v1/admin/applications", json={"name": name}, admin=True))

    def list_applications(self):
        return self._send(_Call("GET", "/api/v1/admin/applications", admin=True))

    def rename_application(self, application_id: int, name: str):
        return self._send(_Call("PUT", f"/api/v1/admin/applications/{application_id}", json={"name": name},
                                admin=True))

    def delete_application(self, application_id: int):
        return self._send(_Call("DELETE", f"/api/v1/admin/applications/{application_id}", admin=True))

    def create_service(self, application_id: int, name: str, type: str,
                       similarity_threshold: float | None = None, shards: int | None = None,
                       shard_replicas: int | None = None, model: str | None = None):
        body = {"name": name, "type": type, "similarity_threshold": similarity_threshold, "shards": shards,
                "shard_replicas": shard_replicas, "model": model}
        return self._send(_Call("POST", f"/api/v1/admin/applications/{application_id}/services",
                                json={k: v for k, v in body.items() if v is not None}, admin=True))

    def get_service(self, service_id: int):
        return self._send(_Call("GET", f"/api/v1/admin/services/{service_id}", admin=True))

    def list_services(self, application_id: int):
        return self._send(_Call("GET", f"/api/v1/admin/applications/{application_id}/services", admin=True))

    def update_service(self, service_id: int, **changes):
        return self._send(_Call("PUT", f"/api/v1/admin/services/{service_id}", json=changes, admin=True))

    def delete_service(self, service_id: int):
        return self._send(_Call("DELETE", f"/api/v1/admin/services/{service_id}", admin=True))

    def regenerate_key(self, service_id: int):
        return self._send(_Call("POST", f"/api/v1/admin/services/{service_id}/key", admin=True))

    def service_stats(self, service_id: int):
        return self._send(_Call("GET", f"/api/v1/admin/services/{service_id}/stats", admin=True))

    def get_quotas(self, service_id: int):
        return self._send(_Call("GET", f"/api/v1/admin/services/{service_id}/quotas", admin=True))

    def set_quotas(self, service_id: int, **quotas):
        """``requests_per_s``, ``faces``, ``streams``, ``sse_connections``, ``event_media_bytes``; None: default."""
        return self._send(_Call("PUT", f"/api/v1/admin/services/{service_id}/quotas", json=quotas, admin=True))

    # video (admin token, or a video service key for its own streams)
    video = "/api/v1/video"

    def add_stream(self, source_url: str, **settings):
        """Settings: name, watchlist_service_id, max_fps, min_face_size, roi, mode, det_prob_threshold,
        save_frame, enabled, webhook_url, webhook_secret."""
        return self._send(_Call("POST", f"{self.video}/streams", json={"source_url": source_url, **settings},
                                admin=True))

    def list_streams(self):
        return self._send(_Call("GET", f"{self.video}/streams", admin=True))

    def get_stream(self, stream_id: int):
        return self._send(_Call("GET", f"{self.video}/streams/{stream_id}", admin=True))

    def update_stream(self, stream_id: int, **changes):
        return self._send(_Call("PATCH", f"{self.video}/streams/{stream_id}", json=changes, admin=True))

    def delete_stream(self, stream_id: int):
        return self._send(_Call("DELETE", f"{self.video}/streams/{stream_id}", admin=True))

    def list_events(self, stream: int | None = None, subject: str | None = None, unknown: bool | None = None,
                    since: str | None = None, after_id: int | None = None, limit: int = 100):
        return self._send(_Call("GET", f"{self.video}/events", _params(
            stream=stream, subject=subject, unknown=unknown, since=since, after_id=after_id, limit=limit), admin=True))

    def get_event(self, event_id: int):
        return self._send(_Call("GET", f"{self.video}/events/{event_id}", admin=True))

    def event_crop(self, event_id: int):
        return self._send(_Call("GET", f"{self.video}/events/{event_id}/crop", admin=True, raw=True))

    def event_frame(self, event_id: int):
        return self._send(_Call("GET", f"{self.video}/events/{event_id}/frame", admin=True, raw=True))

    # bulk jobs (admin)
    def start_enroll_job(self, service_id: int, path: str | None = None, manifest: str | None = None,
                         on_multiple: str = "largest", report: str | None = None):
        body = {"service_id": service_id, "path": path, "manifest": manifest, "on_multiple": on_multiple,
                "report": report}
        return self._send(_Call("POST", "/api/v1/admin/jobs/enroll",
                                json={k: v for k, v in body.items() if v is not None}, admin=True))

    def start_migrate_job(self, service_id: int, model: str | None = None):
        body = {"service_id": service_id, "model": model}
        return self._send(_Call("POST", "/api/v1/admin/jobs/migrate",
                                json={k: v for k, v in body.items() if v is not None}, admin=True))

    def get_job(self, job_id: int):
        return self._send(_Call("GET", f"/api/v1/admin/jobs/{job_id}", admin=True))

    def list_jobs(self, service_id: int | None = None, limit: int = 100):
        return self._send(_Call("GET", "/api/v1/admin/jobs", _params(service_id=service_id, limit=limit), admin=True))

    # health
    def readyz(self):
        return self._send(_Call("GET", "/readyz"))


class _Transport:
    def __init__(self, api_key: str | None, admin_token: str | None):
        self.api_key = api_key
        self.admin_token = admin_token

    def _request_args(self, call: _Call) -> dict:
        headers = {}
        if call.admin and self.admin_token:
            headers["x-admin-token"] = self.admin_token
        elif self.api_key:
            headers["x-api-key"] = self.api_key
        files = {name: (name, data) for name, data in call.files.items()} if call.files else None
        return {"method": call.method, "url": call.path, "params": call.params, "json": call.json,
                "files": files, "headers": headers}

    @staticmethod
    def _result(call: _Call, response: httpx.Response):
        if response.status_code >= 400:
            retry_after = response.headers.get("retry-after")
            retry_after = float(retry_after) if retry_after and retry_after.isdigit() else None
            try:
                body = response.json()
                raise FaceApiError(response.status_code, body.get("message", response.text), body.get("code"),
                                   retry_after)
            except ValueError:
                raise FaceApiError(response.status_code, response.text, None, retry_after) from None
        return response.content if call.raw else response.json()


class FaceClient(_Transport, _FaceApi):
    """Synchronous client."""

    def __init__(self, base_url: str, api_key: str | None = None, admin_token: str | None = None,
                 timeout: float = 60.0):
        super().__init__(api_key, admin_token)
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def _send(self, call: _Call):
        return self._result(call, self.http.request(**self._request_args(call)))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "FaceClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncFaceClient(_Transport, _FaceApi):
    """Asynchronous client: the same methods, awaited."""

    def __init__(self, base_url: str, api_key: str | None = None, admin_token: str | None = None,
                 timeout: float = 60.0):
        super().__init__(api_key, admin_token)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def _send(self, call: _Call):
        return self._result(call, await self.http.request(**self._request_args(call)))

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> "AsyncFaceClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
