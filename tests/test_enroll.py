"""Bulk enrollment on Ray Data against the running platform: real Ray, PostgreSQL, LanceDB, photos.

The lfw-dev tree is enrolled once through the admin API (module fixture) and then re-run, resumed
after a real kill, and searched over HTTP; smaller trees and manifests cover broken files, the
several-faces policies, bad requests and a manifest on an S3 server (moto).
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from PIL import Image

from batch_jobs.embedding import IMAGES_AT_ONCE, EmbedImages, PoolPlan, pipeline_config, plan_pool
from batch_jobs.enroll import EnrollSpec
from batch_jobs.errors import JobInputError
from batch_jobs.face_ids import face_id
from batch_jobs.locations import Locator, resolve
from batch_jobs.outcomes import OnMultiple
from batch_jobs.report import read_report
from batch_jobs.runtime import control_plane, dataset_batches
from bulk_helpers import enroll_in_process, stored_faces, wait_for_job
from facecore.models import SFACE
from faces_cli.service_names import resolve_service
from faces_settings import Settings
from serve_app.client import FaceApiError, FaceClient

MODEL_ID = f"{SFACE.name}@{SFACE.version}"


@pytest.fixture(scope="module")
def bulk_app(admin):
    application = admin.create_application("bulk-enroll-tests")
    yield application
    admin.delete_application(application["id"])  # with its jobs: none is left pointing at a stopped S3 server


def new_service(admin, app: dict, name: str, kind: str = "recognition", shards: int | None = None) -> dict:
    return admin.create_service(app["id"], name, kind, shards=shards)


def lfw_tree(data_dir: Path) -> Path:
    return (data_dir / "lfw-dev").resolve()


@pytest.fixture(scope="module")
def lfw_job(server, admin, bulk_app, data_dir):
    """The lfw-dev tree enrolled into a two-shard service by a job started through the admin API."""
    service = new_service(admin, bulk_app, "lfw", shards=2)
    started = admin.start_enroll_job(service["id"], path=str(lfw_tree(data_dir)))
    assert started["status"] == "pending" and started["kind"] == "enroll"
    job = wait_for_job(admin, started["id"])
    assert job["status"] == "succeeded", job["error"]
    return {"service": service, "job": job, "report": read_report(job["report_path"]).to_pylist()}


def test_api_job_enrolls_the_lfw_tree_and_reports_every_image(server, admin, lfw_job, data_dir):
    service, job, rows = lfw_job["service"], lfw_job["job"], lfw_job["report"]
    files = {str(path) for path in lfw_tree(data_dir).glob("*/*.jpg")}
    assert len(files) == 522
    assert len(rows) == 522 and {row["source"] for row in rows} == files  # each image exactly once
    assert job["total"] == job["processed"] == 522 and job["progress"] == 1.0 and job["images_per_s"] > 0
    assert Counter(row["status"] for row in rows) == {"enrolled": 522}
    assert job["counts"] == {"enrolled": 522, "faces": 522}
    assert all(row["subject"] == Path(row["source"]).parent.name and len(row["face_ids"]) == 1 for row in rows)
    assert sum(row["faces"] > 1 for row in rows) > 10  # background people: the largest face was taken

    api = FaceClient(server.url, api_key=service["api_key"])
    people = {folder.name for folder in lfw_tree(data_dir).iterdir() if folder.is_dir()}
    assert set(api.list_subjects()["subjects"]) == people and len(people) == 162
    assert api.list_faces(size=1)["total_elements"] == 522
    stored = stored_faces(server.settings, service["id"], shards=2)
    by_id = {face["face_id"]: face for face in stored}
    assert len(stored) == len(by_id) == 522
    assert by_id.keys() == {row["face_ids"][0] for row in rows}
    for row in rows:
        face = by_id[row["face_ids"][0]]
        assert (face["source"], face["subject"], face["model"]) == (row["source"], row["subject"], MODEL_ID)
        assert row["face_ids"][0] == face_id(service["id"], row["source"], 0)
    assert job["id"] in [listed["id"] for listed in admin.list_jobs(service_id=service["id"])]


def test_a_rerun_enrolls_nothing_new(server, lfw_job, data_dir):
    service = lfw_job["service"]
    before = sorted(face["face_id"] for face in stored_faces(server.settings, service["id"], shards=2))
    result, report = enroll_in_process(server.settings, service["id"], EnrollSpec(str(lfw_tree(data_dir))))
    assert Counter(report.column("status").to_pylist()) == {"already_enrolled": 522}
    assert result.counts.get("faces", 0) == 0 and result.counts.get("enrolled", 0) == 0
    after = sorted(face["face_id"] for face in stored_faces(server.settings, service["id"], shards=2))
    assert after == before


def job_env(server, **extra: str) -> dict[str, str]:
    """Environment of a job process that joins the test session's cluster, database and tables."""
    import ray

    settings = server.settings
    return {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "disabled",
            "FACES_DATA_DIR": str(settings.data_dir), "FACES_POSTGRES_DSN": settings.postgres_dsn,
            "FACES_THREADS": "2", "FACES_MAX_UPLOAD_BYTES": str(settings.max_upload_bytes), "PYTHONUNBUFFERED": "1",
            **extra}


def test_a_killed_job_resumes_to_exactly_the_faces_of_an_uninterrupted_run(server, admin, bulk_app, lfw_job,
                                                                            data_dir):
    service = new_service(admin, bulk_app, "resumed")
    # a fine-grained job: batches of 16, blocks of 64 KiB (about 4 lfw photos; the default 4 MiB holds
    # about 270, so the 522 photos would be two blocks, done before the kill), commits of 32 faces
    env = job_env(server, FACES_ENROLL_COMMIT_FACES="32", FACES_ENROLL_BATCH_SIZE="16",
                  FACES_JOB_BLOCK_BYTES=str(1 << 16))
    tree = str(lfw_tree(data_dir))
    # The Ray Job entry point, killed for real once some commits are acknowledged.
    killed = subprocess.Popen([sys.executable, "-m", "faces_cli.main", "enroll", tree, "--service",
                               f"{bulk_app['name']}/resumed", "--quiet"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while admin.service_stats(service["id"])["faces"] < 96:
        if killed.poll() is not None or time.monotonic() > deadline:
            killed.kill()
            pytest.fail("the job ended or stalled before it could be killed:\n" + killed.stdout.read())
        time.sleep(0.2)
    killed.kill()
    killed.wait(timeout=30)
    time.sleep(2)  # let a commit that was in flight land before counting
    committed = admin.service_stats(service["id"])["faces"]
    assert 96 <= committed < 522

    # `faces enroll` resumes it: only the missing inputs are processed, under a progress bar.
    resumed = subprocess.run([sys.executable, "-m", "faces_cli.main", "enroll", tree, "--service",
                              str(service["id"])], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert re.search(r"522/522 \[[0-9:]+<00:00, +[0-9.]+img/s", resumed.stderr), resumed.stderr[-2000:]
    assert int(re.search(r"already_enrolled\s+(\d+)", resumed.stdout).group(1)) == committed
    assert int(re.search(r"faces stored\s+(\d+)", resumed.stdout).group(1)) == 522 - committed

    stored = stored_faces(server.settings, service["id"])
    ids = [face["face_id"] for face in stored]
    uninterrupted = [row for row in lfw_job["report"] if row["status"] == "enrolled"]
    assert len(ids) == len(set(ids)) == len(uninterrupted)  # no duplicates, none missing
    assert set(ids) == {face_id(service["id"], row["source"], 0) for row in uninterrupted}
    reference = stored_faces(server.settings, lfw_job["service"]["id"], shards=2)
    assert sorted((f["source"], f["subject"]) for f in stored) == sorted((f["source"], f["subject"]) for f in reference)


@pytest.fixture(scope="module")
def cli_job(server, admin, bulk_app, data_dir, tmp_path_factory) -> dict:
    """`faces enroll` of two photos of two people each, as a user runs it: its output and its job."""
    tree = tmp_path_factory.mktemp("cli-tree")
    for person in sorted(path for path in lfw_tree(data_dir).iterdir() if path.is_dir())[:2]:
        (tree / person.name).mkdir()
        for photo in sorted(person.glob("*.jpg"))[:2]:
            (tree / person.name / photo.name).write_bytes(photo.read_bytes())
    new_service(admin, bulk_app, "cli")
    done = subprocess.run([sys.executable, "-m", "faces_cli.main", "enroll", str(tree), "--service",
                           f"{bulk_app['name']}/cli"], env=job_env(server), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    job = admin.get_job(int(re.match(r"job (\d+): ", done.stdout).group(1)))
    return {"stdout": done.stdout, "stderr": done.stderr, "job": job}


def test_faces_enroll_prints_its_own_lines_only_and_counts_the_stored_faces(cli_job):
    """The first screen of `faces enroll`: the job, the bar and the summary, none of Ray's log lines."""
    screen = cli_job["stdout"] + cli_job["stderr"]
    # nothing of Ray's own: its loggers' lines (tab after the time), the workers' output, Ray Data's
    # plans and warnings, Serve's lines
    assert not re.search(r"^\S+ \S+\t|\(MapWorker|\(pid=|UserWarning|Dataset|ray-data|\bserve\b", screen, re.M), screen
    # and nothing else either (Ray's C++ core logs straight to the terminal): the job line, the summary, the
    # report on stdout; the bar's redraws on stderr
    own = re.compile(r"job \d+: enrolling |\d+ inputs in |  \S+ +\d+$|  faces stored +\d+$|report: ")
    assert [line for line in cli_job["stdout"].splitlines() if line and not own.match(line)] == [], screen
    redraws = [part for line in cli_job["stderr"].splitlines() for part in line.split("\r")]
    assert [part for part in redraws if part.strip() and not re.search(r"img/s[,\]]|s/img[,\]]", part)] == [], screen
    assert int(re.search(r"faces stored\s+(\d+)", cli_job["stdout"]).group(1)) == 4
    assert re.search(r"4/4 \[.*faces=4", cli_job["stderr"]), cli_job["stderr"]


def test_a_finished_jobs_report_downloads_over_http_and_nothing_else_does(server, admin, cli_job):
    job = cli_job["job"]
    url = f"{server.url}/api/v1/admin/jobs/{job['id']}/report"
    token = {"x-admin-token": server.admin_token}
    answer = httpx.get(url, headers=token, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/vnd.apache.parquet"
    assert f'filename="job-{job["id"]}-report.parquet"' in answer.headers["content-disposition"]
    assert answer.content == Path(job["report_path"]).read_bytes()
    rows = pq.read_table(pa.BufferReader(answer.content)).to_pylist()
    assert sorted(row["status"] for row in rows) == ["enrolled"] * 4
    assert httpx.get(url, timeout=30).status_code == 401  # admin only
    unknown = httpx.get(f"{server.url}/api/v1/admin/jobs/999999/report", headers=token, timeout=30)
    assert unknown.status_code == 404 and "job 999999" in unknown.json()["message"]
    for path in ("..%2F..%2Fetc%2Fpasswd", "1%2F..%2F2"):  # no path of the caller's reaches a file
        refused = httpx.get(f"{server.url}/api/v1/admin/jobs/{path}/report", headers=token, timeout=30)
        assert refused.status_code in (400, 404, 422), refused.text


def test_recognize_finds_each_person_from_another_of_their_images(server, admin, lfw_job):
    """Each person's first photo is taken out of the index, then recognised from the others."""
    api = FaceClient(server.url, api_key=lfw_job["service"]["api_key"])
    photos: dict[str, list[dict]] = {}
    for row in sorted(lfw_job["report"], key=lambda row: row["source"]):
        photos.setdefault(row["subject"], []).append(row)
    queries = {person: rows[0] for person, rows in photos.items() if len(rows) >= 2}
    assert len(queries) == 150
    deleted = api.delete_faces_by_id([row["face_ids"][0] for row in queries.values()])
    assert len(deleted) == 150
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda row: api.recognize(row["source"])["result"][0]["subjects"], queries.values()))
    correct = sum(1 for person, subjects in zip(queries, found) if subjects and subjects[0]["subject"] == person)
    assert correct / len(queries) >= 0.97


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def _blank_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (128, 128, 128)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_broken_files_are_reported_with_their_reason_and_the_job_finishes(server, admin, bulk_app, data_dir, tmp_path):
    good = sorted((data_dir / "lfw-dev" / "Ari_Fleischer").glob("*.jpg"))[:2]
    (tmp_path / "Ari_Fleischer").mkdir()
    for path in good:
        (tmp_path / "Ari_Fleischer" / path.name).write_bytes(path.read_bytes())
    broken = tmp_path / "Broken"
    broken.mkdir()
    jpeg = good[0].read_bytes()
    (broken / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (broken / "text.jpg").write_text("this is a text file, not a photo\n")
    (broken / "empty.jpg").write_bytes(b"")
    (broken / "huge.png").write_bytes(_png_header(100_000, 100_000))
    (broken / "blank.jpg").write_bytes(_blank_jpeg())
    (tmp_path / "Group").mkdir()
    (tmp_path / "Group" / "group.jpg").write_bytes((data_dir / "group" / "dlib_2008_001322.jpg").read_bytes())
    (tmp_path / "loose.jpg").write_bytes(jpeg)
    (tmp_path / "notes.txt").write_text("not an image name: ignored")

    service = new_service(admin, bulk_app, "broken")
    result, report = enroll_in_process(server.settings, service["id"],
                                       EnrollSpec(str(tmp_path), on_multiple=OnMultiple.REJECT))
    rows = {Path(row["source"]).name: row for row in report.to_pylist()}
    assert len(rows) == report.num_rows == 9
    expected = {"truncated.jpg": ("invalid", "truncated"), "text.jpg": ("invalid", "not an image"),
                "empty.jpg": ("invalid", "empty"), "huge.png": ("invalid", "pixels"),
                "blank.jpg": ("no_face", "no face"), "group.jpg": ("multiple_faces", "3 faces"),
                "loose.jpg": ("invalid", "not inside a subject folder")}
    for name, (status, reason) in expected.items():
        assert rows[name]["status"] == status and reason in rows[name]["reason"], rows[name]
    assert [rows[path.name]["status"] for path in good] == ["enrolled", "enrolled"]
    assert result.counts == {"invalid": 5, "no_face": 1, "multiple_faces": 1, "enrolled": 2, "faces": 2}
    api = FaceClient(server.url, api_key=service["api_key"])
    assert api.list_subjects()["subjects"] == ["Ari_Fleischer"]


def test_policy_all_enrolls_every_face_of_a_group_photo(server, admin, bulk_app, data_dir, tmp_path):
    (tmp_path / "Crowd").mkdir()
    photo = tmp_path / "Crowd" / "group.jpg"
    photo.write_bytes((data_dir / "group" / "dlib_2008_001322.jpg").read_bytes())
    service = new_service(admin, bulk_app, "crowd")
    _, report = enroll_in_process(server.settings, service["id"], EnrollSpec(str(tmp_path), on_multiple=OnMultiple.ALL))
    row = report.to_pylist()[0]
    assert row["status"] == "enrolled" and row["faces"] == 3
    assert row["face_ids"] == [face_id(service["id"], str(photo), index) for index in range(3)]
    assert {face["face_id"] for face in stored_faces(server.settings, service["id"])} == set(row["face_ids"])


def test_a_manifest_on_object_storage(server, admin, bulk_app, data_dir, s3_endpoint):
    options = f"endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"
    bucket = pafs.S3FileSystem(access_key="testing", secret_key="testing", endpoint_override=s3_endpoint,
                               scheme="http", region="us-east-1", allow_bucket_creation=True)
    bucket.create_dir("photos")
    people = ["Abel_Pacheco", "Alvaro_Uribe", "Angelina_Jolie"]
    lines = ["path,subject,face_id"]
    for person in people:
        for number, path in enumerate(sorted((data_dir / "lfw-dev" / person).glob("*.jpg"))[:2]):
            with bucket.open_output_stream(f"photos/imgs/{person}/{path.name}") as out:
                out.write(path.read_bytes())
            # relative to the manifest, or a full URI of the same bucket; one explicit face id
            where = f"imgs/{person}/{path.name}" if number == 0 else f"s3://photos/imgs/{person}/{path.name}"
            lines.append(f"{where},{person},{'badge-' + person if person == 'Alvaro_Uribe' and number == 0 else ''}")
    lines += ["imgs/Nobody/missing.jpg,Nobody,", f"imgs/{people[0]}/x.jpg,,"]
    with bucket.open_output_stream("photos/manifest.csv") as out:
        out.write(("\n".join(lines) + "\n").encode())

    service = new_service(admin, bulk_app, "from-s3")
    manifest = f"s3://testing:testing@photos/manifest.csv?{options}"
    report_uri = f"s3://testing:testing@photos/reports/run.jsonl?{options}"
    result, report = enroll_in_process(server.settings, service["id"],
                                       EnrollSpec(manifest, manifest=True, report=report_uri))
    rows = report.to_pylist()
    assert result.report == "s3://photos/reports/run.jsonl" and len(rows) == 8
    enrolled = [row for row in rows if row["status"] == "enrolled"]
    assert len(enrolled) == 6 and all(row["source"].startswith("s3://photos/imgs/") for row in enrolled)
    assert "badge-Alvaro_Uribe" in {row["face_ids"][0] for row in enrolled}
    failures = {row["source"]: row["reason"] for row in rows if row["status"] == "invalid"}
    assert "cannot read" in failures["s3://photos/imgs/Nobody/missing.jpg"]
    assert "no subject" in failures[f"s3://photos/imgs/{people[0]}/x.jpg"]
    api = FaceClient(server.url, api_key=service["api_key"])
    assert sorted(api.list_subjects()["subjects"]) == people
    unseen = sorted((data_dir / "lfw-dev" / "Angelina_Jolie").glob("*.jpg"))[2]  # not in the manifest
    assert api.recognize(unseen)["result"][0]["subjects"][0]["subject"] == "Angelina_Jolie"


def test_bad_job_requests_are_clear_4xx(server, admin, bulk_app, data_dir, tmp_path):
    recognition = new_service(admin, bulk_app, "bad-requests")
    detection = new_service(admin, bulk_app, "detector", kind="detection")
    tree = str(lfw_tree(data_dir))
    cases = [
        (dict(service_id=999_999, path=tree), 404, "not found"),
        (dict(service_id=detection["id"], path=tree), 400, "recognition service"),
        (dict(service_id=recognition["id"], path=str(tmp_path / "nowhere")), 400, "not found"),
        (dict(service_id=recognition["id"], path=tree, on_multiple="first"), 400, "on_multiple"),
        (dict(service_id=recognition["id"], path=tree, manifest=tree), 400, "exactly one"),
        (dict(service_id=recognition["id"], path=str(data_dir / "lfw-dev" / "pairs.txt")), 400, "not a folder"),
    ]
    for body, status, message in cases:
        with pytest.raises(FaceApiError) as error:
            admin.start_enroll_job(**body)
        assert error.value.status == status and message in error.value.message, (body, error.value)
    with pytest.raises(FaceApiError) as error:
        admin.start_migrate_job(recognition["id"], model="arcface")
    assert error.value.status == 400 and "unknown embedding model" in error.value.message
    with pytest.raises(FaceApiError) as error:
        admin.get_job(999_999)
    assert error.value.status == 404

    manifest = tmp_path / "people.csv"
    manifest.write_text("file,name\nx.jpg,someone\n")
    failed = wait_for_job(admin, admin.start_enroll_job(recognition["id"], manifest=str(manifest))["id"])
    assert failed["status"] == "failed" and "'subject' column" in failed["error"]


def test_services_are_named_by_name_app_and_name_or_id(server, admin):
    first, second = admin.create_application("bulk-names-1"), admin.create_application("bulk-names-2")
    one = admin.create_service(first["id"], "twin", "recognition")
    admin.create_service(second["id"], "twin", "recognition")
    admin.create_service(first["id"], "only-detects", "detection")

    async def resolve_all() -> list:
        async with control_plane(server.settings) as control:
            results = []
            for ref in ("twin", "bulk-names-1/twin", str(one["id"]), "only-detects", "ghost"):
                try:
                    results.append((await resolve_service(control, ref)).id)
                except JobInputError as exc:
                    results.append(str(exc))
            return results

    ambiguous, by_app, by_id, wrong_type, missing = asyncio.run(resolve_all())
    assert "APP/SERVICE" in ambiguous and by_app == by_id == one["id"]
    assert "detection service" in wrong_type and "no service named 'ghost'" in missing


def test_face_ids_are_deterministic_per_service_source_and_index():
    assert face_id(1, "/a.jpg", 0) == face_id(1, "/a.jpg", 0)
    assert len({face_id(1, "/a.jpg", 0), face_id(2, "/a.jpg", 0), face_id(1, "/b.jpg", 0),
                face_id(1, "/a.jpg", 1)}) == 4
    assert face_id(1, "/a.jpg", 0, given="emp-7") == "emp-7" and face_id(1, "/a.jpg", 2, given="emp-7") == "emp-7#2"


def test_the_embedder_pool_is_sized_to_the_cluster_and_uses_gpus_where_present():
    settings = Settings()
    two_cores = plan_pool(settings, {"CPU": 2}, {"CPU": 2})
    assert (two_cores.actors, two_cores.num_cpus, two_cores.threads) == (2, 1.0, 1)
    busy = plan_pool(settings, {"CPU": 2}, {"CPU": 1})  # the Serve embedder holds the other CPU
    assert (busy.actors, busy.num_cpus) == (2, 0.5)
    sixteen = plan_pool(settings, {"CPU": 16}, {"CPU": 16})
    assert (sixteen.actors, sixteen.num_cpus, sixteen.threads) == (14, 1.0, 1)  # two CPUs left to the rest
    gpus = plan_pool(settings, {"CPU": 16, "GPU": 2}, {"CPU": 16, "GPU": 2})
    assert (gpus.actors, gpus.num_gpus) == (8, 0.25)
    # a lone actor runs the threads of the CPUs it reserves, never every core of the machine: on a node
    # started with --num-cpus=1 it took both cores of a two-core machine
    one_cpu_node = plan_pool(settings, {"CPU": 1}, {"CPU": 1})
    assert (one_cpu_node.actors, one_cpu_node.num_cpus, one_cpu_node.threads) == (1, 1.0, 1)
    single = plan_pool(settings.model_copy(update={"enroll_embedders": 1, "enroll_embedder_num_cpus": 4}),
                       {"CPU": 16}, {"CPU": 16})
    assert (single.actors, single.num_cpus, single.threads) == (1, 4.0, 4)
    # no more actors than the job has batches (each loads its models), unless the count is set
    three_batches = plan_pool(settings, {"CPU": 16}, {"CPU": 16}, batches=3)
    assert (three_batches.actors, three_batches.num_cpus) == (3, 1.0)
    assert plan_pool(settings, {"CPU": 3}, {"CPU": 2.5}, batches=1).actors == 1
    assert plan_pool(settings, {"CPU": 16}, {"CPU": 16}, batches=0).actors == 1  # an empty job still plans one
    fixed = plan_pool(settings.model_copy(update={"enroll_embedders": 4}), {"CPU": 16}, {"CPU": 16}, batches=1)
    assert fixed.actors == 4


def test_an_embedder_runs_a_large_batch_in_chunks_and_answers_every_image_in_its_place(data_dir):
    # a batch larger than IMAGES_AT_ONCE: the pipeline never holds more decoded images than that, and
    # every row gets its own answer (a broken file among them, and a row the read stage already settled)
    settings = Settings()
    embedder = EmbedImages(pipeline_config(settings, PoolPlan(1, 1.0, 0.0, 1)), settings.det_prob_threshold, "largest")
    at_once: list[int] = []
    detect_decoded = embedder.pipeline.detect_decoded

    def counted(decoded, *args):
        at_once.append(len(decoded))
        return detect_decoded(decoded, *args)

    embedder.pipeline.detect_decoded = counted
    photos = [path.read_bytes() for path in sorted((data_dir / "lfw-dev").glob("*/*.jpg"))[:IMAGES_AT_ONCE + 10]]
    images = [*photos[:IMAGES_AT_ONCE], b"not a jpeg", *photos[IMAGES_AT_ONCE:], b""]
    rows = len(images)
    out = embedder(pa.table({"source": [f"s{n}" for n in range(rows)], "subject": ["x"] * rows,
                             "face_id": pa.array([None] * rows, pa.string()),
                             "status": [None] * (rows - 1) + ["already_enrolled"],
                             "reason": pa.array([None] * rows, pa.string()), "image": pa.array(images, pa.binary())}))
    assert max(at_once) <= IMAGES_AT_ONCE and sum(at_once) == len(photos)
    assert out.column("source").to_pylist() == [f"s{n}" for n in range(rows)]
    statuses = out.column("status").to_pylist()
    assert statuses[IMAGES_AT_ONCE] == "invalid" and statuses[-1] == "already_enrolled"
    assert statuses.count("enrolled") == len(photos)
    # each answer is its own image's: the same embedding as the image run alone
    alone = embedder.pipeline.analyze([photos[-1]], limit=1)[0][0].embedding
    assert np.dot(out.column("embeddings")[rows - 2].as_py()[0], alone) > 0.999


# What a bulk job's driver, read tasks and embedder actors import: they reach the shards through the
# shard actors and never open a table, and run the embedder's batch core without Ray Serve.
JOB_MODULES = ("batch_jobs.enroll", "batch_jobs.fetch", "batch_jobs.embedding")


def test_a_jobs_driver_read_tasks_and_embedders_import_neither_lancedb_nor_serve():
    # each costs CPU in every such process of every job: LanceDB's import about 0.6 s, Serve's 0.3 s
    done = subprocess.run([sys.executable, "-c", f"import sys, {', '.join(JOB_MODULES)}; "
                           "print(sorted(name for name in sys.modules if name.split('.')[0] in ('lancedb', 'lance') "
                           "or name.startswith('ray.serve')))"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_jobs_driver_gets_each_block_as_soon_as_it_exists(server, tmp_path):
    import ray.data

    # The later blocks exist only once the driver has the first: a driver that waits for blocks ahead
    # of the one it hands out (Ray Data's prefetching) sees none of them before they give up waiting.
    released = str(tmp_path / "first block received")

    def held_until_released(batch: dict) -> dict:  # defined here: Ray's workers cannot import this module
        deadline = time.monotonic() + 20
        while batch["id"][0] > 0 and not os.path.exists(released) and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"id": batch["id"], "held_out": np.array([time.monotonic() >= deadline] * len(batch["id"]))}

    dataset = ray.data.range(3, override_num_blocks=3).map_batches(held_until_released, batch_size=None, num_cpus=0)

    async def receive() -> list[pa.Table]:
        blocks = []
        async for block in dataset_batches(dataset):
            Path(released).touch()
            blocks.append(block)
        return blocks

    blocks = asyncio.run(receive())
    assert blocks[0].column("id").to_pylist() == [0]
    assert sorted(i for block in blocks for i in block.column("id").to_pylist()) == [0, 1, 2]
    assert not any(held for block in blocks for held in block.column("held_out").to_pylist())


def test_manifest_paths_resolve_against_the_manifest_and_its_filesystem(tmp_path):
    manifest = resolve(str(tmp_path / "lists" / "m.csv"))
    locator = Locator(manifest, base_is_folder=False)
    assert locator.locate("a/b.jpg").uri == str(tmp_path / "lists" / "a" / "b.jpg")
    assert locator.locate("/abs/c.jpg").uri == "/abs/c.jpg"
    remote = resolve("s3://key:secret@bucket/dir/m.csv?endpoint_override=127.0.0.1:1&scheme=http&region=x")
    assert remote.uri == "s3://bucket/dir/m.csv" and "secret" in remote.address
    remote_locator = Locator(remote, base_is_folder=False)
    relative, absolute = remote_locator.locate("x/y.jpg"), remote_locator.locate("s3://bucket/z.jpg")
    assert (relative.uri, absolute.uri) == ("s3://bucket/dir/x/y.jpg", "s3://bucket/z.jpg")
    assert relative.filesystem is absolute.filesystem is remote.filesystem  # the manifest's options apply
