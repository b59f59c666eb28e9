"""IndexShard and FaceTable on real LanceDB tables in temporary folders (no Ray, no mocks)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image

from faceindex.layout import ServiceLayout
from faceindex.rows import MIN_CAPACITY, ShardRows
from faceindex.shard import IndexShard
from store.faces import CACHE_BYTES, FaceRecord, FaceTable, face_schema, lance_session, sql_string

DIM = 128
MODEL = "sface@2021dec-int8bq"
CREATED = datetime(2024, 5, 17, 12, 30, 15, 123456, tzinfo=timezone.utc)


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def jpeg(seed: int, size: int = 112) -> bytes:
    """A real JPEG of a smooth, seed-dependent picture."""
    y, x = np.mgrid[0:size, 0:size]
    pixels = np.stack([(x * 2 + seed) % 256, (y * 2 + 3 * seed) % 256, (x + y + seed) % 256], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


CROP = jpeg(1)


def records(ids: list[str], subjects: list[str], vectors: np.ndarray, crop: bytes = CROP) -> list[FaceRecord]:
    return [FaceRecord(face_id=i, subject=s, embedding=v, model=MODEL, crop=crop, source=None,
                       created_at=CREATED) for i, s, v in zip(ids, subjects, vectors)]


def population(seed: int, n: int, subjects: int) -> tuple[list[str], list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = [f"face-{seed}-{i}" for i in range(n)]
    names = [f"person {i % subjects}" for i in range(n)]
    return ids, names, unit(rng, n)


def brute_subjects(ids, names, vectors, query, k):
    """Top-k distinct subjects by the best cosine of their faces, computed naively."""
    scores = vectors @ query
    best: dict[str, tuple[float, str]] = {}
    for face_id, name, score in zip(ids, names, scores):
        if name not in best or score > best[name][0]:
            best[name] = (float(score), face_id)
    ranked = sorted(best.items(), key=lambda item: -item[1][0])[:k]
    return [(name, score, face_id) for name, (score, face_id) in ranked]


def same_subject_results(got, expected):
    assert [(s, f) for s, _, f in got] == [(s, f) for s, _, f in expected]
    assert np.allclose([c for _, c, _ in got], [c for _, c, _ in expected], atol=1e-5)


@pytest.fixture
def uri(tmp_path) -> str:
    return str(tmp_path / "faces")


@pytest.fixture
def filled(uri):
    """A shard with 2000 faces of 200 subjects, and the data it holds."""
    ids, names, vectors = population(7, 2000, 200)
    shard = IndexShard(uri, ServiceLayout(1, 1).table_name(0), DIM)
    assert shard.add(records(ids, names, vectors)) == 2000
    return shard, ids, names, vectors


def stored_ids(uri: str, name: str) -> set[str]:
    ids, _, _ = FaceTable.open(uri, name, DIM).scan_index_columns()
    return set(ids)


# ------------------------------------------------------------------------------- FaceTable


def test_schema_and_names():
    schema = face_schema(DIM)
    assert schema.names == ["face_id", "subject", "embedding", "model", "crop", "source", "created_at"]
    assert schema.field("embedding").type.list_size == DIM
    assert not schema.field("face_id").nullable and not schema.field("embedding").nullable
    assert schema.field("source").nullable
    assert str(schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    assert ServiceLayout(3, 2).table_name(1) == "faces_s3_n2_p1"
    assert sql_string("O'Brien") == "'O''Brien'"


def test_face_table_open_creates_reopens_and_checks_dim(uri):
    table = FaceTable.open(uri, "t", DIM)
    assert table.count() == 0
    rng = np.random.default_rng(0)
    table.add(records(["a", "b"], ["x", "y"], unit(rng, 2)))
    again = FaceTable.open(uri, "t", DIM)
    assert again.count() == 2 and again.count("x") == 1
    with pytest.raises(ValueError, match="dimension"):
        FaceTable.open(uri, "t", 512)
    with pytest.raises(ValueError):
        table.add(records(["c"], ["x"], unit(rng, 1, 64)))
    assert again.count() == 2
    stale = FaceTable.open(uri, "t", DIM)
    fresh = FaceTable.open(uri, "t", DIM, read_consistency_interval=timedelta(0))
    table.delete_ids(["a"])
    assert stale.count() == 2 and fresh.count() == 1  # other handles see commits only when asked
    FaceTable.drop_table(uri, "t")
    FaceTable.drop_table(uri, "t")  # missing is fine
    assert FaceTable.open(uri, "t", DIM).count() == 0


def test_face_table_scan_reads_columns_in_order(uri):
    ids, names, vectors = population(3, 300, 30)
    table = FaceTable.open(uri, "t", DIM)
    table.add(records(ids[:100], names[:100], vectors[:100]))
    table.add(records(ids[100:], names[100:], vectors[100:]))
    got_ids, got_names, got_vectors = table.scan_index_columns()
    assert got_ids == ids and got_names == names
    assert got_vectors.dtype == np.float32 and got_vectors.shape == (300, DIM)
    assert np.array_equal(got_vectors, vectors)
    table.optimize()
    assert table.scan_index_columns()[0] == ids


# ------------------------------------------------------------------------------- search


def test_search_top1_equals_brute_force(filled):
    shard, ids, names, vectors = filled
    rng = np.random.default_rng(11)
    queries = np.concatenate([vectors[rng.choice(2000, 10)] + 0.05 * unit(rng, 10), unit(rng, 10)])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    brute = queries @ vectors.T
    faces = shard.search_faces(queries, 5)
    subjects = shard.search_subjects(queries, 5)
    assert len(faces) == len(subjects) == 20
    for q in range(20):
        order = np.argsort(-brute[q])[:5]
        assert [f for f, _, _ in faces[q]] == [ids[i] for i in order]
        assert [s for _, s, _ in faces[q]] == [names[i] for i in order]
        assert np.allclose([c for _, _, c in faces[q]], brute[q][order], atol=1e-5)
        top = int(np.argmax(brute[q]))
        assert subjects[q][0][0] == names[top] and subjects[q][0][2] == ids[top]
        same_subject_results(subjects[q], brute_subjects(ids, names, vectors, queries[q], 5))


def test_search_single_vector_and_bad_shapes(filled):
    shard, ids, _, vectors = filled
    result = shard.search_faces(vectors[42], 1)
    assert result[0][0][0] == ids[42] and result[0][0][2] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError):
        shard.search_faces(np.ones((2, 64), np.float32), 1)
    with pytest.raises(ValueError):
        shard.search_subjects(vectors[:1], 0)


def test_distinct_subjects_despite_near_duplicates(uri):
    rng = np.random.default_rng(5)
    query = unit(rng, 1)[0]
    crowd = query + 0.02 * unit(rng, 500)
    crowd /= np.linalg.norm(crowd, axis=1, keepdims=True)
    others = unit(rng, 150)
    ids = [f"c{i}" for i in range(500)] + [f"o{i}" for i in range(150)]
    names = ["crowd"] * 500 + [f"other {i % 50}" for i in range(150)]
    vectors = np.concatenate([crowd, others])
    shard = IndexShard(uri, "dup", DIM)
    shard.add(records(ids, names, vectors))
    result = shard.search_subjects(query[None, :], 5)[0]
    assert len(result) == 5 and len({s for s, _, _ in result}) == 5
    assert result[0][0] == "crowd"
    same_subject_results(result, brute_subjects(ids, names, vectors, query, 5))
    # more subjects asked for than exist: every subject once
    everyone = shard.search_subjects(query[None, :], 1000)[0]
    assert len(everyone) == 51 and {s for s, _, _ in everyone} == set(names)
    same_subject_results(everyone, brute_subjects(ids, names, vectors, query, 1000))


def test_distinct_subjects_random_many_k(filled):
    shard, ids, names, vectors = filled
    queries = unit(np.random.default_rng(9), 4)
    for k in (1, 10, 60):
        for q, got in enumerate(shard.search_subjects(queries, k)):
            same_subject_results(got, brute_subjects(ids, names, vectors, queries[q], k))


def test_subject_filter(filled):
    shard, ids, names, vectors = filled
    queries = unit(np.random.default_rng(2), 3)
    rows = [i for i, n in enumerate(names) if n == "person 17"]
    got = shard.search_faces(queries, 4, subject="person 17")
    for q in range(3):
        scores = vectors[rows] @ queries[q]
        order = np.argsort(-scores)[:4]
        assert [f for f, _, _ in got[q]] == [ids[rows[i]] for i in order]
        assert {s for _, s, _ in got[q]} == {"person 17"}
        assert np.allclose([c for _, _, c in got[q]], scores[order], atol=1e-5)
    assert len(shard.search_faces(queries[:1], 50, subject="person 17")[0]) == len(rows) == 10
    assert shard.search_faces(queries, 4, subject="nobody") == [[], [], []]


def test_similarity_to(filled):
    shard, ids, _, vectors = filled
    queries = unit(np.random.default_rng(4), 3)
    sims = shard.similarity_to(ids[10], queries)
    assert sims.shape == (3,) and np.allclose(sims, queries @ vectors[10], atol=1e-5)
    assert shard.similarity_to("missing", queries) is None


def test_empty_shard(uri):
    shard = IndexShard(uri, "empty", DIM)
    queries = unit(np.random.default_rng(0), 2)
    assert shard.search_subjects(queries, 3) == [[], []]
    assert shard.search_faces(queries, 3) == [[], []]
    assert shard.count() == 0 and shard.subjects() == {} and shard.list_faces(None, 0, 10) == ([], 0)
    assert shard.delete_all() == 0 and shard.delete_ids(["x"]) == [] and shard.delete_subject("x") == 0
    assert shard.add([]) == 0


# ------------------------------------------------------------------------------- writes


def test_delete_ids(filled, uri):
    shard, ids, names, vectors = filled
    gone = ids[:5] + [ids[1999], ids[1000]]
    deleted = shard.delete_ids(gone + ["not-here", ids[0]])
    assert sorted(deleted) == sorted((ids[i], names[i]) for i in [0, 1, 2, 3, 4, 1999, 1000])
    assert shard.count() == 1993
    assert shard.delete_ids(gone) == []
    assert stored_ids(uri, ServiceLayout(1, 1).table_name(0)) == set(ids) - set(gone)
    for i in [0, 1000, 1999]:
        assert shard.get_face(ids[i]) is None
        assert shard.similarity_to(ids[i], vectors[:1]) is None
        assert all(f not in gone for f, _, _ in shard.search_faces(vectors[i][None, :], 10)[0])
    # the rows moved into the holes are still found exactly
    kept = [i for i in range(2000) if ids[i] not in gone]
    top = shard.search_faces(vectors[kept[-1]], 1)[0][0]
    assert top[0] == ids[kept[-1]] and top[2] == pytest.approx(1.0, abs=1e-5)


def test_loaded_rows_count_their_ids_in_memory_before_and_after_changes():
    """A load leaves the ids' bytes unsummed until memory is asked for; they count all the same."""
    rng = np.random.default_rng(3)
    vectors = unit(rng, 2000)
    short, long = ShardRows(DIM), ShardRows(DIM)
    short.load([f"f{i}" for i in range(2000)], ["s"] * 2000, vectors.copy(), "short")
    long.load([f"f{i}" + "x" * 100 for i in range(2000)], ["s"] * 2000, vectors.copy(), "long")
    for rows, new_id in ((short, "new"), (long, "new" + "x" * 100)):  # changes before memory is asked for
        rows.remove([0])
        rows.append([new_id], ["s"], vectors[:1])
    assert long.memory_bytes() - short.memory_bytes() == 2000 * 100
    for rows in (short, long):  # and after
        rows.remove([5])
    assert long.memory_bytes() - short.memory_bytes() == 1999 * 100


def test_add_and_delete_churn_leaves_memory_where_it_was(uri):
    """Each added face's id was kept for the approximate index's tail even after its delete, and with
    no index yet for ever: a small gallery under add/delete churn grew by every face it ever saw."""
    rng = np.random.default_rng(7)
    shard = IndexShard(uri, "churn", DIM)
    shard.add(records([f"kept-{i}" for i in range(50)], ["kept"] * 50, unit(rng, 50)))
    before = shard.memory_bytes()
    for batch in range(30):  # 300 faces come and go, ten at a time
        visitors = [f"visitor-{batch}-{i}" for i in range(10)]
        shard.add(records(visitors, ["visitor"] * 10, unit(rng, 10)))
        assert len(shard.delete_ids(visitors)) == 10
    # the id map's own slack stays (about 3.6 KB here); the ids of 300 deleted faces took 13 KB more
    assert shard.memory_bytes() - before < 6 * 1024
    assert shard.count() == 50


SHARD_ALLOCATOR_PROBE = """
import sys
import pyarrow as pa
from faceindex.shard import IndexShard
print(pa.default_memory_pool().backend_name)
IndexShard(sys.argv[1], "probe", 8)
print(pa.default_memory_pool().backend_name)
"""


def test_shard_process_allocates_arrow_buffers_with_the_system_allocator(uri):
    """With Arrow's bundled mimalloc, a shard whose table is rewritten by erasures kept the buffers its
    writes handed to LanceDB's threads: 2 to 3 KB per add and delete pair in a long churn."""
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    probe = subprocess.run([sys.executable, "-c", SHARD_ALLOCATOR_PROBE, uri], env=env, capture_output=True,
                           text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert probe.returncode == 0, probe.stderr
    before, after = probe.stdout.split()
    assert before != "system"  # the wheel's default, which a fresh process starts with
    assert after == "system"


def test_bulk_delete_ids_compacts(filled, uri):
    shard, ids, names, vectors = filled
    gone = ids[::3]
    assert len(shard.delete_ids(gone)) == len(gone)
    kept = [i for i in range(2000) if i % 3]
    assert shard.count() == len(kept) and stored_ids(uri, ServiceLayout(1, 1).table_name(0)) == {ids[i] for i in kept}
    queries = unit(np.random.default_rng(8), 5)
    expected_ids = [ids[i] for i in kept]
    for q, got in enumerate(shard.search_subjects(queries, 7)):
        same_subject_results(got, brute_subjects(expected_ids, [names[i] for i in kept],
                                                 vectors[kept], queries[q], 7))
    assert sum(shard.subjects().values()) == len(kept)


def test_delete_subject_and_all(filled, uri):
    shard, ids, names, vectors = filled
    assert shard.delete_subject("person 3") == 10
    assert shard.count("person 3") == 0 and "person 3" not in shard.subjects()
    assert shard.delete_subject("person 3") == 0
    assert shard.count() == 1990 and len(shard.subjects()) == 199
    assert FaceTable.open(uri, ServiceLayout(1, 1).table_name(0), DIM).count("person 3") == 0
    assert all(s != "person 3" for s, _, _ in shard.search_subjects(vectors[3], 199)[0])
    assert shard.delete_all() == 1990
    assert shard.count() == 0 and shard.subjects() == {}
    assert FaceTable.open(uri, ServiceLayout(1, 1).table_name(0), DIM).count() == 0
    assert shard.add(records(ids[:3], names[:3], vectors[:3])) == 3
    assert IndexShard(uri, ServiceLayout(1, 1).table_name(0), DIM).count() == 3


def test_subject_counts_of_a_page_of_names(filled):
    shard, ids, names, vectors = filled
    assert shard.subject_counts(["person 3", "nobody", "person 199"]) == [10, 0, 10]
    shard.delete_ids([ids[names.index("person 3")]])
    assert shard.subject_counts(["person 3"]) == [9] and shard.subject_counts([]) == []


def test_rename_and_merge(filled, uri):
    shard, ids, names, vectors = filled
    assert shard.rename_subject("person 1", "Zed") == 10
    assert shard.count("Zed") == 10 and shard.count("person 1") == 0
    assert shard.rename_subject("person 2", "person 4") == 10  # merge into an existing subject
    assert shard.count("person 4") == 20 and "person 2" not in shard.subjects()
    assert shard.rename_subject("nobody", "x") == 0
    assert len(shard.subjects()) == 199
    assert shard.search_subjects(vectors[1], 1)[0][0][:1] == ("Zed",)
    merged = shard.search_faces(vectors[2], 1, subject="person 4")[0][0]
    assert merged[0] == ids[2] and merged[1] == "person 4"
    page, total = shard.list_faces("person 4", 0, 100)
    merged_ids = {ids[i] for i in range(2000) if names[i] in ("person 2", "person 4")}
    assert total == 20 and {f for f, _ in page} == merged_ids
    # a new subject code freed by the merge is reused without confusion
    shard.add(records(["new-face"], ["Newcomer"], unit(np.random.default_rng(1), 1)))
    assert shard.count("Newcomer") == 1 and shard.count("person 4") == 20
    reopened = IndexShard(uri, ServiceLayout(1, 1).table_name(0), DIM)
    assert reopened.subjects() == shard.subjects()
    assert shard.get_face(ids[1]).subject == "Zed"


def test_list_faces_paging(uri):
    rng = np.random.default_rng(6)
    ids = [f"f{i:03d}" for i in range(60)]
    names = ["alice" if i % 2 else "bob" for i in range(60)]
    names[:5] = ["carol"] * 5
    shard = IndexShard(uri, "list", DIM)
    shard.add(records(ids, names, unit(rng, 60)))
    pages = [shard.list_faces(None, offset, 25) for offset in (0, 25, 50, 75)]
    assert [len(p) for p, _ in pages] == [25, 25, 10, 0] and {t for _, t in pages} == {60}
    assert [f for p, _ in pages for f, _ in p] == ids  # insertion order before any delete
    alice = [shard.list_faces("alice", offset, 10) for offset in (0, 10, 20, 30)]
    assert [len(p) for p, _ in alice] == [10, 10, 8, 0] and {t for _, t in alice} == {28}
    alice_ids = [f for p, _ in alice for f, s in p]
    assert len(set(alice_ids)) == 28
    assert set(alice_ids) == {i for i, n in zip(ids, names) if n == "alice"}
    assert all(s == "alice" for p, _ in alice for _, s in p)
    assert shard.list_faces("dave", 0, 10) == ([], 0)
    assert shard.list_faces("carol", 3, 0) == ([], 5)
    with pytest.raises(ValueError):
        shard.list_faces(None, -1, 10)


def test_get_face_returns_crop_unchanged(uri):
    rng = np.random.default_rng(12)
    crops = [jpeg(seed) for seed in (10, 20)]
    vectors = unit(rng, 2)
    shard = IndexShard(uri, "crops", DIM)
    faces = records(["a", "b"], ["x", "y"], vectors)
    faces[0].crop, faces[1].crop = crops
    faces[1].source = "s3://bucket/photo b.jpg"
    shard.add(faces)
    got = shard.get_face("b")
    assert got.crop == crops[1] and isinstance(got.crop, bytes)
    assert Image.open(io.BytesIO(got.crop)).size == (112, 112)
    assert (got.face_id, got.subject, got.model, got.source) == ("b", "y", MODEL, "s3://bucket/photo b.jpg")
    assert got.created_at == CREATED and got.created_at.utcoffset().total_seconds() == 0
    assert got.embedding.dtype == np.float32 and np.allclose(got.embedding, vectors[1], atol=1e-6)
    assert shard.get_face("a").crop == crops[0] and shard.get_face("a").source is None
    assert shard.get_face("zzz") is None


def test_add_normalizes_and_rejects_bad_embeddings(uri):
    shard = IndexShard(uri, "norm", DIM)
    vector = np.full(DIM, 3.0, dtype=np.float32)
    shard.add(records(["a"], ["x"], [vector]))
    assert np.linalg.norm(shard.get_face("a").embedding) == pytest.approx(1.0, abs=1e-5)
    assert shard.search_faces(vector, 1)[0][0][2] == pytest.approx(1.0, abs=1e-5)
    for bad in (np.zeros(DIM, np.float32), np.ones(64, np.float32), np.full(DIM, np.nan, np.float32)):
        with pytest.raises(ValueError):
            shard.add(records(["b"], ["x"], [bad]))
    assert shard.count() == 1 and FaceTable.open(uri, "norm", DIM).count() == 1


def test_readd_is_idempotent_and_replaces(filled, uri):
    shard, ids, names, vectors = filled
    assert shard.add(records(ids[:100], names[:100], vectors[:100])) == 2000
    assert FaceTable.open(uri, ServiceLayout(1, 1).table_name(0), DIM).count() == 2000
    # a face id seen again with another subject and embedding replaces the old face
    moved = unit(np.random.default_rng(77), 1)
    assert shard.add(records([ids[0]], ["Moved"], moved)) == 2000
    assert shard.count("Moved") == 1 and shard.count(names[0]) == 9
    assert shard.search_faces(moved, 1)[0][0][:2] == (ids[0], "Moved")
    # duplicates inside one batch: the last wins
    twice = records(["dup", "dup"], ["first", "second"], unit(np.random.default_rng(78), 2))
    assert shard.add(twice) == 2001
    assert shard.get_face("dup").subject == "second" and shard.count("first") == 0
    reopened = IndexShard(uri, ServiceLayout(1, 1).table_name(0), DIM)
    assert reopened.count() == 2001 and reopened.subjects() == shard.subjects()
    assert reopened.get_face(ids[0]).subject == "Moved"


def test_quotes_in_subject_names(uri):
    tricky = ["O'Brien", "''", 'say "hi"', "x' OR '1'='1", "back\\slash", "名前 ü", "%_"]
    rng = np.random.default_rng(13)
    ids = [f"q{i}'" for i in range(len(tricky) * 2)]  # quotes in face ids too
    names = tricky * 2
    vectors = unit(rng, len(ids))
    shard = IndexShard(uri, "quotes", DIM)
    shard.add(records(ids, names, vectors))
    assert shard.subjects() == {name: 2 for name in tricky}
    assert shard.get_face("q0'").subject == "O'Brien"
    table = FaceTable.open(uri, "quotes", DIM, read_consistency_interval=timedelta(0))
    assert all(table.count(name) == 2 for name in tricky)
    assert shard.delete_subject("x' OR '1'='1") == 2
    assert shard.count() == 12 and table.count() == 12
    assert shard.rename_subject("O'Brien", "D'Arcy") == 2
    assert table.count("D'Arcy") == 2 and table.count("O'Brien") == 0
    assert [r for r in shard.delete_ids(["q1'"])] == [("q1'", "''")]
    assert table.count("''") == 1
    page, total = shard.list_faces("D'Arcy", 0, 10)
    assert total == 2 and {f for f, _ in page} == {"q0'", f"q{len(tricky)}'"}
    assert IndexShard(uri, "quotes", DIM).subjects() == shard.subjects()


def test_recovery_holds_exactly_the_acknowledged_faces(uri):
    name = ServiceLayout(9, 4).table_name(2)
    ids, names, vectors = population(21, 1500, 120)
    shard = IndexShard(uri, name, DIM)
    for start in range(0, 1500, 300):
        shard.add(records(ids[start:start + 300], names[start:start + 300], vectors[start:start + 300]))
    shard.delete_ids(ids[100:160])
    shard.delete_subject("person 5")
    shard.rename_subject("person 6", "person 7")
    shard.add(records(ids[100:110], ["back"] * 10, vectors[100:110]))
    with pytest.raises(ValueError):
        shard.add(records(["never"], ["x"], [np.zeros(DIM, np.float32)]))
    reopened = IndexShard(uri, name, DIM)
    assert reopened.count() == shard.count() and reopened.subjects() == shard.subjects()
    assert set(reopened.list_faces(None, 0, 10**6)[0]) == set(shard.list_faces(None, 0, 10**6)[0])
    assert reopened.get_face("never") is None
    queries = unit(np.random.default_rng(22), 8)
    for before, after in zip(shard.search_subjects(queries, 10), reopened.search_subjects(queries, 10)):
        same_subject_results(after, before)
    for before, after in zip(shard.search_faces(queries, 10), reopened.search_faces(queries, 10)):
        assert [f for f, _, _ in after] == [f for f, _, _ in before]
        assert np.allclose([c for _, _, c in after], [c for _, _, c in before], atol=1e-6)


def test_capacity_doubles_across_many_adds(uri):
    ids, names, vectors = population(31, 3000, 300)
    shard = IndexShard(uri, "grow", DIM)
    capacities, reallocations, previous = [], 0, shard._rows.vectors
    for start in range(0, 3000, 100):
        shard.add(records(ids[start:start + 100], names[start:start + 100], vectors[start:start + 100]))
        if shard._rows.vectors is not previous:
            reallocations += 1
            previous = shard._rows.vectors
        capacities.append(shard._rows.vectors.shape[0])
    assert capacities[0] == MIN_CAPACITY and capacities[-1] == 4 * MIN_CAPACITY
    assert reallocations == 2  # 1024 -> 2048 -> 4096, not once per add
    assert shard.count() == 3000 and shard.memory_bytes() >= 4 * MIN_CAPACITY * DIM * 4
    queries = unit(np.random.default_rng(32), 5)
    brute = queries @ vectors.T
    for q, got in enumerate(shard.search_faces(queries, 3)):
        assert [f for f, _, _ in got] == [ids[i] for i in np.argsort(-brute[q])[:3]]
    reopened = IndexShard(uri, "grow", DIM)  # loads into a full matrix; the next add doubles it
    assert reopened._rows.vectors.shape[0] == 3000
    reopened.add(records(["one more"], ["x"], unit(np.random.default_rng(33), 1)))
    assert reopened._rows.vectors.shape[0] == 6000 and reopened.count() == 3001
    assert reopened.search_faces(vectors[2999], 1)[0][0][0] == ids[2999]


def test_drop(filled, uri):
    shard, ids, names, vectors = filled
    shard.drop()
    assert shard.count() == 0 and shard.search_faces(vectors[:1], 3) == [[]]
    with pytest.raises(RuntimeError):
        shard.add(records(ids[:1], names[:1], vectors[:1]))
    assert IndexShard(uri, ServiceLayout(1, 1).table_name(0), DIM).count() == 0


def test_load_keeps_the_last_of_duplicate_ids_written_around_the_shard(uri):
    rng = np.random.default_rng(50)
    table = FaceTable.open(uri, "dups", DIM)
    table.add(records(["a", "b"], ["first", "x"], unit(rng, 2)))
    last = unit(rng, 1)
    table.add(records(["a"], ["second"], last))
    shard = IndexShard(uri, "dups", DIM)
    assert shard.count() == 2 and shard.subjects() == {"x": 1, "second": 1}
    assert shard.search_faces(last, 1)[0][0][:2] == ("a", "second")


def test_dim_mismatch(filled, uri):
    with pytest.raises(ValueError, match="dimension"):
        IndexShard(uri, ServiceLayout(1, 1).table_name(0), 512)


# ------------------------------------------------------------------------------- timing


def test_scan_and_search_timing_200k(uri):
    """Prints the time of a 10k-row commit, a 200k-row scan, a shard load and one search."""
    n, step = 200_000, 10_000
    rng = np.random.default_rng(40)
    small_crop = jpeg(2, size=16)
    table = FaceTable.open(uri, "big", DIM)
    vectors = unit(rng, n)
    ids = [f"id{i}" for i in range(n)]
    names = [f"subject {i % 20000}" for i in range(n)]
    add_times = []
    for start in range(0, n, step):
        batch = records(ids[start:start + step], names[start:start + step], vectors[start:start + step],
                        crop=small_crop)
        started = time.perf_counter()
        table.add(batch)
        add_times.append(time.perf_counter() - started)
    started = time.perf_counter()
    got_ids, got_names, got_vectors = table.scan_index_columns()
    scan = time.perf_counter() - started
    assert got_ids == ids and got_names == names and np.array_equal(got_vectors, vectors)
    started = time.perf_counter()
    shard = IndexShard(uri, "big", DIM)
    load = time.perf_counter() - started
    assert shard.count() == n and len(shard.subjects()) == 20000
    query = vectors[123_456] + 0.1 * unit(rng, 1)[0]
    shard.search_subjects(query, 10)  # warm up
    started = time.perf_counter()
    subjects = shard.search_subjects(query, 10)[0]
    search_subjects = time.perf_counter() - started
    started = time.perf_counter()
    faces = shard.search_faces(query, 10)[0]
    search_faces = time.perf_counter() - started
    assert subjects[0][2] == ids[123_456] and faces[0][0] == ids[123_456]
    assert len({s for s, _, _ in subjects}) == 10
    print(f"\n200k x {DIM}-d: add 10k rows (one commit) median {np.median(add_times) * 1000:.0f} ms; "
          f"scan {scan * 1000:.0f} ms; shard load {load * 1000:.0f} ms; one query: search_subjects "
          f"{search_subjects * 1000:.1f} ms, search_faces {search_faces * 1000:.1f} ms; "
          f"memory {shard.memory_bytes() / 2**20:.0f} MiB")


def test_many_small_commits_are_compacted(uri):
    from faceindex.upkeep import TableUpkeep

    COMPACT_EVERY_COMMITS = TableUpkeep().compact_every_commits
    shard = IndexShard(uri, "compacted", DIM)
    rng = np.random.default_rng(7)
    for i in range(COMPACT_EVERY_COMMITS + 3):
        shard.add(records([f"face-{i}"], ["someone"], unit(rng, 1)))
    fragments = shard._table._table.stats()["fragment_stats"]["num_fragments"]
    assert fragments <= 4  # one compacted fragment plus the few commits since
    assert shard.count() == COMPACT_EVERY_COMMITS + 3
    assert IndexShard(uri, "compacted", DIM).count() == COMPACT_EVERY_COMMITS + 3


# ------------------------------------------------------------------------------- erasure and upkeep


def files_holding(folder: str, needle: bytes) -> list[str]:
    """Every file under ``folder`` whose bytes contain ``needle``."""
    from pathlib import Path

    return [str(path) for path in Path(folder).rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_deleted_faces_leave_the_table_files_within_the_erasure_delay(uri):
    from faceindex.upkeep import TableUpkeep

    shard = IndexShard(uri, "erased", DIM, upkeep=TableUpkeep(erase_after_s=1.0))
    vectors = unit(np.random.default_rng(3), 40)
    crops = [jpeg(100 + i) for i in range(40)]
    for i in range(0, 40, 10):  # several commits, as faces arrive one request at a time
        shard.add([record for j in range(i, i + 10)
                   for record in records([f"f{j}"], [f"person {j % 4}"], vectors[j:j + 1], crops[j])])
    gone, kept = shard.get_face("f5"), shard.get_face("f6")  # the bytes as stored (unit length, float32)
    gone_vector, gone_crop = gone.embedding.astype(np.float32).tobytes(), gone.crop
    kept_vector, kept_crop = kept.embedding.astype(np.float32).tobytes(), kept.crop
    assert gone_crop == crops[5] and len(gone_vector) == 4 * DIM
    assert shard.delete_ids(["f5"]) == [("f5", "person 1")]
    # A delete only marks the row: its bytes are still on disk, which is what the erasure is for.
    assert files_holding(uri, gone_vector) and files_holding(uri, gone_crop)
    deadline = time.monotonic() + 30
    while files_holding(uri, gone_vector) or files_holding(uri, gone_crop):
        assert time.monotonic() < deadline, "the deleted face's bytes stayed on disk"
        time.sleep(0.2)
    assert files_holding(uri, kept_vector) and files_holding(uri, kept_crop)
    reopened = IndexShard(uri, "erased", DIM)
    assert reopened.count() == 39 and reopened.get_face("f6").crop == kept_crop and reopened.get_face("f5") is None


def test_versions_and_files_stay_bounded_under_adds_and_deletes(uri):
    from pathlib import Path

    from faceindex.upkeep import TableUpkeep

    upkeep = TableUpkeep(compact_every_commits=32, erase_after_s=0.5)
    shard = IndexShard(uri, "churn", DIM, upkeep=upkeep)
    rng = np.random.default_rng(11)
    folder = Path(uri) / "churn.lance"
    commit_times, samples = [], []
    for i in range(600):  # 1200 commits: an add and a delete per round, the face count flat
        shard.add(records([f"face-{i}"], [f"person {i % 7}"], unit(rng, 1)))
        commit_times.append(time.monotonic())
        if i >= 20:
            shard.delete_ids([f"face-{i - 20}"])
            commit_times.append(time.monotonic())
        if i % 10 == 9:
            # A compaction removes the versions older than erase_after_s, and one runs at least every
            # compact_every_commits commits: so the versions kept are at most those of the commits of
            # the last erase_after_s before that compaction and since, each compaction's own two (one
            # that changes no data, then the rewritten files) and the table's first. The
            # bound follows the commit rate, which a busy machine changes during the run.
            latest_compaction = commit_times[max(0, len(commit_times) - upkeep.compact_every_commits - 1)]
            recent = sum(1 for t in commit_times if t >= latest_compaction - upkeep.erase_after_s - 0.1)
            bound = recent + 2 * (recent // upkeep.compact_every_commits + 1) + 1
            versions = shard._table.version_count()
            files = sum(1 for f in folder.rglob("*") if f.is_file())
            samples.append((i + 1, versions, bound, files))
    shard.erase_deleted()  # the last delete's erasure now, so that no timer outlives the test
    assert shard.count() == 20
    assert len(shard._rows.codes) == MIN_CAPACITY  # the in-memory matrix did not grow either
    assert lance_session().size_bytes <= 1.25 * CACHE_BYTES  # nor LanceDB's caches (metadata, index)
    # unbounded, the last sample would hold 1,180 versions and about 3,500 files
    assert all(versions <= bound for _, versions, bound, _ in samples), samples
    # every version's files, and no file left behind: a version is a manifest, a transaction, and a
    # data or deletion file; what a compaction rewrites is removed with the versions that used it
    assert all(files <= 3 * versions + 20 for _, versions, _, files in samples), samples
