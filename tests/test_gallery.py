"""A service's gallery (subject rows in PostgreSQL, faces in the index shards) under real failures.

Processes are stopped and killed by pid: the shard actor's process (SIGSTOP holds a request at the
shard step, SIGKILL kills it there; Ray restarts the actor from its table) and, to cut a request off
between its steps, the ingress replicas that carry it. Afterwards the client's retry, or
``faces gallery check --repair``, must leave subjects and faces in agreement.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import ray

from actors.index_shard import NAMESPACE, ShardGroup
from facecore.context_crop import thumbnail_jpeg
from faceindex.layout import ServiceLayout
from serve_app.client import FaceApiError, FaceClient

SERVING_TIMEOUT_S = 180


def people(data_dir: Path, count: int, skip: int = 0) -> dict[str, list[Path]]:
    folders = sorted(p for p in (data_dir / "lfw-dev").iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2)
    return {folder.name: sorted(folder.glob("*.jpg")) for folder in folders[skip:skip + count]}


def new_service(admin: FaceClient, name: str, shards: int) -> tuple[dict, str]:
    application = admin.create_application(name)
    service = admin.create_service(application["id"], "gallery", "recognition", shards=shards)
    return service, service["api_key"]


def shard(service: dict, index: int = 0):
    return ray.get_actor(ServiceLayout(service["id"], service["shards"]).actor_name(index), namespace=NAMESPACE)


def pid_of(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda _: os.getpid()), timeout=60)


def ingress_pids() -> list[int]:
    replicas = [entry for entry in ray.util.list_named_actors(all_namespaces=True)
                if entry["name"].startswith("SERVE_REPLICA::faces#Ingress")]
    assert replicas, "no ingress replica found"
    return [pid_of(ray.get_actor(entry["name"], namespace=entry["namespace"])) for entry in replicas]


def wait_until_serving(api: FaceClient) -> None:
    deadline = time.monotonic() + SERVING_TIMEOUT_S
    while True:
        try:
            api.list_subjects()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def best_subject(api: FaceClient, photo: Path) -> str | None:
    faces = api.recognize(photo.read_bytes(), prediction_count=1, threshold=0.0)["result"]
    return faces[0]["subjects"][0]["subject"] if faces and faces[0]["subjects"] else None


def cut_off(request, stopped_pid: int, kill_ingress: bool) -> object:
    """Send ``request`` while ``stopped_pid`` (a shard) is frozen, so that it waits at the shard step;
    then SIGKILL the ingress replicas (when asked) and the shard. Returns the request's outcome: its
    result, or the exception it ended with."""
    replicas = ingress_pids() if kill_ingress else []
    os.kill(stopped_pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(request)
            time.sleep(4)  # the request reaches the frozen shard and waits there
            for pid in replicas:
                os.kill(pid, signal.SIGKILL)
            os.kill(stopped_pid, signal.SIGKILL)  # killed while frozen: Ray restarts the actor from its table
            try:
                return pending.result(timeout=SERVING_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - a request cut off ends with whatever the proxy answers
                return exc
    finally:
        try:
            os.kill(stopped_pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def gallery_cli(server, service_id: int, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACES_DATA_DIR": str(server.settings.data_dir),
           "FACES_RAY_ADDRESS": ray.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "faces_cli.main", "gallery", "check", "--service", str(service_id),
                           *flags], env=env, capture_output=True, text=True, timeout=240)


def test_a_delete_cut_off_after_its_first_step_is_finished_by_the_retry(server, admin, data_dir):
    service, key = new_service(admin, "gallery-cut-delete", shards=1)
    with FaceClient(server.url, api_key=key, timeout=SERVING_TIMEOUT_S) as api:
        (gone, photos), (kept, kept_photos) = people(data_dir, 2).items()
        for photo in photos:
            api.add_face(photo.read_bytes(), subject=gone)
        api.add_face(kept_photos[0].read_bytes(), subject=kept)
        assert best_subject(api, photos[0]) == gone

        outcome = cut_off(lambda: api.delete_subject(gone), pid_of(shard(service)), kill_ingress=True)
        assert not isinstance(outcome, dict), f"the request was not cut off: {outcome}"
        wait_until_serving(api)

        # The client retries: the subject must still be there for the retry to finish the job.
        assert api.delete_subject(gone) == {"subject": gone}
        assert api.list_subjects()["subjects"] == [kept]
        assert best_subject(api, photos[0]) != gone
        assert api.list_faces(subject=gone)["total_elements"] == 0
    result = gallery_cli(server, service["id"])
    assert result.returncode == 0 and "agree" in result.stdout, result.stdout + result.stderr


def test_a_shard_killed_mid_delete_restarts_and_the_delete_completes(server, admin, data_dir):
    service, key = new_service(admin, "gallery-kill-delete", shards=1)
    with FaceClient(server.url, api_key=key, timeout=SERVING_TIMEOUT_S) as api:
        (gone, photos), = people(data_dir, 1, skip=2).items()
        for photo in photos:
            api.add_face(photo.read_bytes(), subject=gone)

        outcome = cut_off(lambda: api.delete_subject(gone), pid_of(shard(service)), kill_ingress=False)
        if not isinstance(outcome, dict):  # a client seeing an error retries
            assert isinstance(outcome, FaceApiError) and outcome.status == 503, outcome
            outcome = api.delete_subject(gone)
        assert outcome == {"subject": gone}
        assert api.list_subjects()["subjects"] == []
        assert ray.get(shard(service).count.remote(), timeout=60) == 0
        assert best_subject(api, photos[0]) is None


def test_a_rename_cut_off_with_a_shard_killed_is_repaired_by_gallery_check(server, admin, data_dir):
    service, key = new_service(admin, "gallery-cut-rename", shards=2)
    with FaceClient(server.url, api_key=key, timeout=SERVING_TIMEOUT_S) as api:
        (old, photos), = people(data_dir, 1, skip=3).items()
        added = 0
        while added < 4 or not all(ray.get(shard(service, i).count.remote(old), timeout=60) for i in (0, 1)):
            api.add_face(photos[added % len(photos)].read_bytes(), subject=old)  # faces on both shards
            added += 1
            assert added <= 24

        outcome = cut_off(lambda: api.rename_subject(old, "renamed"), pid_of(shard(service, 1)), kill_ingress=True)
        assert not isinstance(outcome, dict), f"the request was not cut off: {outcome}"
        wait_until_serving(api)
        # Half done: shard 0 moved its faces, shard 1 (killed) did not; both names have a row.
        assert ray.get(shard(service, 0).count.remote(old), timeout=60) == 0
        assert ray.get(shard(service, 1).count.remote(old), timeout=60) > 0

        found = gallery_cli(server, service["id"])
        assert found.returncode == 1 and f"unfinished rename of subject '{old}' to 'renamed'" in found.stdout, \
            found.stdout + found.stderr
        repaired = gallery_cli(server, service["id"], "--repair")
        assert repaired.returncode == 0 and "repaired" in repaired.stdout, repaired.stdout + repaired.stderr
        again = gallery_cli(server, service["id"])
        assert again.returncode == 0 and "agree" in again.stdout, again.stdout + again.stderr

        assert api.list_subjects()["subjects"] == ["renamed"]
        assert api.list_faces(subject="renamed")["total_elements"] == added
        assert api.list_faces(subject=old)["total_elements"] == 0
        assert best_subject(api, photos[0]) == "renamed"
        with pytest.raises(FaceApiError) as missing:  # done: a late retry finds nothing left to rename
            api.rename_subject(old, "renamed")
        assert missing.value.status == 404


def files_holding(root: Path, needles: list[bytes]) -> set[int]:
    """Indexes of the ``needles`` found in any regular file under ``root`` (links not followed)."""
    found: set[int] = set()
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:  # removed while we walked
                continue
            found.update(i for i, needle in enumerate(needles) if needle in data)
    return found


def photo_of_its_own(path: Path, seed: int) -> bytes:
    """The photo with faint noise of its own: its crop and embedding bytes are found nowhere else (other
    tests of the session enroll the same photos, and the pipeline is deterministic)."""
    import cv2

    image = cv2.imread(str(path)).astype(np.int16)
    image += np.random.default_rng(seed).integers(-2, 3, image.shape, dtype=np.int16)
    return cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8))[1].tobytes()


def test_a_deleted_subject_leaves_no_embedding_or_crop_byte_under_the_data_dir(server, admin, data_dir):
    service, key = new_service(admin, "gallery-erasure", shards=1)
    with FaceClient(server.url, api_key=key, timeout=SERVING_TIMEOUT_S) as api:
        (gone, photos), (kept, kept_photos) = people(data_dir, 2, skip=4).items()
        seed = time.time_ns()
        gone_id = api.add_face(photo_of_its_own(photos[0], seed), subject=gone)["image_id"]
        kept_id = api.add_face(photo_of_its_own(kept_photos[0], seed + 1), subject=kept)["image_id"]
        gone_face = ray.get(shard(service).get_face.remote(gone_id), timeout=60)
        kept_face = ray.get(shard(service).get_face.remote(kept_id), timeout=60)
        needles = [np.asarray(gone_face.embedding, np.float32).tobytes(), gone_face.crop,
                   np.asarray(kept_face.embedding, np.float32).tobytes(), kept_face.crop]
        assert files_holding(server.settings.data_dir, needles) == {0, 1, 2, 3}

        api.delete_subject(gone)
        # The clean-up the shard runs FACES_ERASE_AFTER_S after a delete, run now.
        asyncio.run(ShardGroup.for_service(service["id"], 1, server.settings, replicas=None).erase_deleted())
        assert files_holding(server.settings.data_dir, needles) == {2, 3}  # only the kept face's bytes
        assert api.face_image(kept_id) == thumbnail_jpeg(kept_face.crop)  # the kept face's image still served


def test_a_deleted_application_leaves_no_face_byte_and_no_report_of_its_jobs(server, admin, data_dir, tmp_path):
    from bulk_helpers import wait_for_job

    service, key = new_service(admin, "gallery-erased-application", shards=1)
    (person, photos), = people(data_dir, 1, skip=6).items()
    (tmp_path / "tree" / person).mkdir(parents=True)
    (tmp_path / "tree" / person / "one.jpg").write_bytes(photo_of_its_own(photos[0], time.time_ns()))
    named = tmp_path / "reports" / "run.jsonl"  # a report the admin names, and one in the job's own folder
    started = [admin.start_enroll_job(service["id"], path=str(tmp_path / "tree"), **report)
               for report in ({}, {"report": str(named)})]
    jobs = [wait_for_job(admin, job["id"]) for job in started]
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"], jobs
    reports = [Path(job["report_path"]) for job in jobs]
    assert reports[1] == named and all(report.is_file() for report in reports)
    assert reports[0].is_relative_to(server.settings.data_dir)
    with FaceClient(server.url, api_key=key, timeout=SERVING_TIMEOUT_S) as api:
        (face_id,) = [face["image_id"] for face in api.list_faces()["faces"]]
    face = ray.get(shard(service).get_face.remote(face_id), timeout=60)
    needles = [np.asarray(face.embedding, np.float32).tobytes(), face.crop]
    assert files_holding(server.settings.data_dir, needles) == {0, 1}

    admin.delete_application(service["application_id"])
    assert [report for report in reports if report.exists()] == []
    assert not reports[0].parent.exists()  # the job's own folder
    assert files_holding(server.settings.data_dir, needles) == set()


def test_events_expire_and_a_deleted_video_service_leaves_no_event_image(server, admin):
    from actors.video_supervisor import SUPERVISOR_NAME
    from store.control import ControlPlane
    from store.event_media import EventMedia
    from store.video_store import VideoStore

    application = admin.create_application("gallery-video")
    video = admin.create_service(application["id"], "cameras", "video")
    media = EventMedia(server.settings.video_media_uri)
    old_days = server.settings.event_retention_days + 1

    async def make_events() -> tuple[int, list[str]]:
        control = await ControlPlane.connect(server.settings.postgres_dsn)
        try:
            store = VideoStore(control.pool)
            stream = await store.create_stream(video["id"], name="door", source_url="rtsp://camera.invalid/1",
                                               max_fps=5.0, min_face_size=0, mode="overall", enabled=False)
            paths = []
            for age_days, name in ((old_days, "old"), (0, "new")):
                crop = media.save(stream.id, f"{name}-crop", f"{name} jpeg bytes".encode())
                now = datetime.now(timezone.utc)
                event = await store.add_event(stream.id, name, "ended", now, now, (0, 0, 1, 1), 0.9, 0.9, None,
                                              None, crop, None)
                await control.pool.execute("UPDATE video_events SET created_at = $2 WHERE id = $1", event.id,
                                           now - timedelta(days=age_days))
                paths.append(crop)
            return stream.id, paths
        finally:
            await control.close()

    stream_id, (old_crop, new_crop) = asyncio.run(make_events())
    supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=NAMESPACE)
    assert ray.get(supervisor.expire_events.remote(), timeout=60) >= 1
    assert media.read(old_crop) is None and media.read(new_crop) == b"new jpeg bytes"
    assert [e["track_id"] for e in admin.list_events(stream=stream_id)] == ["new"]

    admin.delete_service(video["id"])
    assert not (Path(server.settings.video_media_uri) / str(stream_id)).exists()
