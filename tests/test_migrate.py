"""Migration: every stored face re-embedded from its crop, switched atomically per shard; searches
answer the same before and after for an unchanged model."""

from __future__ import annotations

from datetime import datetime, timezone

import lancedb
import numpy as np
import pytest

from faceindex.shard import IndexShard
from batch_jobs.enroll import EnrollSpec
from bulk_helpers import enroll_in_process, stored_faces, wait_for_job
from facecore.models import SFACE
from facecore.similarity import similarity_from_cosine
from serve_app.client import FaceClient
from faceindex.layout import ServiceLayout
from store.faces import FaceRecord, FaceTable

MODEL_ID = f"{SFACE.name}@{SFACE.version}"
PEOPLE = 40


def _answers(api: FaceClient, queries: list) -> list[tuple[list[tuple[str, float]], np.ndarray]]:
    """Per query, its top 3 (subject, similarity) and the query's own embedding (the calculator's)."""
    answers = []
    for query in queries:
        face = api.recognize(query, prediction_count=3, threshold=0.0, face_plugins="calculator")["result"][0]
        answers.append(([(match["subject"], match["similarity"]) for match in face["subjects"]],
                        np.asarray(face["embedding"], np.float64)))
    return answers


def _cosines(query: np.ndarray, subjects: list[str], faces: list[dict]) -> list[float]:
    """The cosine of ``query`` to each subject's best stored face, from the raw embeddings."""
    unit = query / np.linalg.norm(query)
    best: dict[str, float] = {}
    for face in faces:
        stored = np.asarray(face["embedding"], np.float64)
        cosine = float(unit @ stored / np.linalg.norm(stored))
        best[face["subject"]] = max(cosine, best.get(face["subject"], -1.0))
    return [best[subject] for subject in subjects]


@pytest.fixture(scope="module")
def migration(server, admin, data_dir, tmp_path_factory):
    """A two-shard service (a manifest's faces plus one added over HTTP), searched, migrated, searched."""
    app = admin.create_application("bulk-migrate-tests")
    service = admin.create_service(app["id"], "to-migrate", "recognition", shards=2)
    people = sorted(folder for folder in (data_dir / "lfw-dev").iterdir()
                    if folder.is_dir() and len(list(folder.glob("*.jpg"))) >= 2)[:PEOPLE]
    manifest = tmp_path_factory.mktemp("migrate") / "first-photos.csv"
    manifest.write_text("path,subject\n" + "".join(f"{sorted(p.glob('*.jpg'))[0]},{p.name}\n" for p in people))
    enrolled, _ = enroll_in_process(server.settings, service["id"], EnrollSpec(str(manifest), manifest=True))
    assert enrolled.counts == {"enrolled": PEOPLE, "faces": PEOPLE}
    api = FaceClient(server.url, api_key=service["api_key"])
    walk_in = sorted((data_dir / "lfw-dev" / "Zinedine_Zidane").glob("*.jpg"))[0]
    api.add_face(walk_in, subject="Zinedine_Zidane")
    queries = [sorted(p.glob("*.jpg"))[1] for p in people] + [walk_in]
    before = {"faces": stored_faces(server.settings, service["id"], shards=2), "answers": _answers(api, queries),
              "versions": _versions(server.settings.faces_uri, service["id"])}
    job = wait_for_job(admin, admin.start_migrate_job(service["id"])["id"])
    after = {"faces": stored_faces(server.settings, service["id"], shards=2), "answers": _answers(api, queries),
             "versions": _versions(server.settings.faces_uri, service["id"])}
    return {"service": service, "job": job, "before": before, "after": after}


def _versions(faces_uri: str, service_id: int) -> list[int]:
    return [FaceTable.open(faces_uri, ServiceLayout(service_id, 2).table_name(shard), SFACE.embedding_dim).version
            for shard in (0, 1)]


def test_migration_re_embeds_every_face_from_its_crop(server, migration):
    job, before, after = migration["job"], migration["before"]["faces"], migration["after"]["faces"]
    assert job["status"] == "succeeded", job["error"]
    assert job["kind"] == "migrate" and job["input"] == MODEL_ID
    assert job["total"] == job["processed"] == job["counts"]["faces"] == PEOPLE + 1 and job["counts"]["failed"] == 0
    old = {face["face_id"]: face for face in before}
    new = {face["face_id"]: face for face in after}
    assert len(after) == len(new) == len(before) == PEOPLE + 1 and new.keys() == old.keys()
    cosines = []
    for face_id, face in new.items():
        assert (face["subject"], face["source"], face["model"]) == (old[face_id]["subject"], old[face_id]["source"],
                                                                   MODEL_ID)
        cosines.append(float(np.dot(face["embedding"], old[face_id]["embedding"])))
    # re-embedded from the stored JPEG crops: close to, but not bit-identical with, the originals
    assert min(cosines) > 0.98 and max(abs(1 - c) for c in cosines) > 1e-6
    assert all(b > a for a, b in zip(migration["before"]["versions"], migration["after"]["versions"]))
    assert not [name for name in lancedb.connect(server.settings.faces_uri).table_names() if name.endswith("_migrate")]


def test_searches_answer_the_same_before_and_after(migration):
    before, after = migration["before"]["answers"], migration["after"]["answers"]
    assert len(before) == len(after) == PEOPLE + 1
    # The stored crops are JPEG (quality 90): re-embedded vectors move by a cosine of ~0.01 (which the
    # calibrated similarity, steep mid-range, stretches up to 4x). The answer (the best match) stays;
    # strangers further down may swap places only where their cosines (nearly) tie. Cosines are taken
    # from the raw embeddings (the query's and the stored faces'), not from the API's similarities:
    # those are rounded to 5 decimals, and near 1 the calibration's inverse turns one rounding step
    # into a cosine step of several hundredths.
    for (old, old_query), (new, new_query) in zip(before, after):
        assert old[0][0] == new[0][0] and abs(old[0][1] - new[0][1]) < 0.02
        old_cosines = _cosines(old_query, [subject for subject, _ in old], migration["before"]["faces"])
        new_cosines = _cosines(new_query, [subject for subject, _ in new], migration["after"]["faces"])
        for answer, cosines in ((old, old_cosines), (new, new_cosines)):  # the cosines the API ranked by
            assert np.allclose([similarity_from_cosine(c) for c in cosines], [s for _, s in answer], atol=2e-5)
        assert np.allclose(old_cosines, new_cosines, atol=0.03)


def _face(face_id: str, subject: str, vector: list[float], model: str = "old@1") -> FaceRecord:
    return FaceRecord(face_id=face_id, subject=subject, embedding=np.asarray(vector, np.float32), model=model,
                      crop=b"jpeg", source=None, created_at=datetime.now(timezone.utc))


def test_the_switch_copies_faces_added_meanwhile_and_keeps_deletes_and_renames(tmp_path):
    shard = IndexShard(str(tmp_path), "faces_s1_p0", 4)
    shard.add([_face("a", "ann", [1, 0, 0, 0]), _face("b", "bob", [0, 1, 0, 0]), _face("c", "cy", [0, 0, 1, 0])])
    staging = FaceTable.open(str(tmp_path), "faces_s1_p0_migrate", 4)
    staging.add([_face(f, s, v, "new@2") for f, s, v in (("a", "ann", [0, 0, 0, 1]), ("b", "bob", [0, 0, 1, 1]),
                                                          ("c", "cy", [1, 1, 0, 0]))])
    shard.add([_face("d", "dee", [1, 1, 1, 1])])  # while the migration ran: not in the staging table
    shard.delete_ids(["b"])
    shard.rename_subject("ann", "anne")

    assert shard.replace_from("faces_s1_p0_migrate") == ["d"]
    assert shard.search_subjects(np.array([1, 0, 0, 0], np.float32), 1)[0][0][0] == "anne"  # unchanged so far
    staging.add([_face("d", "dee", [0, 1, 1, 1], "new@2")])
    assert shard.replace_from("faces_s1_p0_migrate") == []

    rows = {row["face_id"]: row for batch in FaceTable.open(str(tmp_path), "faces_s1_p0", 4).batches()
            for row in batch.to_pylist()}
    assert sorted(rows) == ["a", "c", "d"]
    assert {row["model"] for row in rows.values()} == {"new@2"} and rows["a"]["subject"] == "anne"
    assert shard.search_subjects(np.array([0, 0, 0, 1], np.float32), 1)[0][0][:1] == ("anne",)
    reopened = IndexShard(str(tmp_path), "faces_s1_p0", 4)  # what a restarted actor loads
    assert reopened.count() == 3 and reopened.subjects() == {"anne": 1, "cy": 1, "dee": 1}
