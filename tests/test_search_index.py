"""Approximate search inside a shard: agreement with exact search on realistic vectors, deletes,
subject filters, the unindexed tail, persistence and the saved file's layouts, memory budget, and a kill
during a rebuild."""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from faceindex.ann_index import AnnIndex
from faceindex.budget import ShardFull
from faceindex.config import SearchConfig
from faceindex.packed_ids import PackedIds
from faceindex.shard import IndexShard
from facecore.synthetic import EmbeddingDistribution
from store.faces import FaceRecord

DISTRACTORS = 200_000
NOW = datetime.now(timezone.utc)


def records(ids, subjects, vectors) -> list[FaceRecord]:
    return [FaceRecord(i, s, v, "sface@test", b"", None, NOW) for i, s, v in zip(ids, subjects, vectors)]


@pytest.fixture(scope="module")
def lfw_embeddings(data_dir, pipeline):
    """Per person, the embeddings of their photos (largest face of each)."""
    people = {}
    for folder in sorted(p for p in (data_dir / "lfw-dev").iterdir() if p.is_dir()):
        photos = sorted(folder.glob("*.jpg"))
        people[folder.name] = [v[0] for v in pipeline.embed([p.read_bytes() for p in photos], limit=1)]
    return people


@pytest.fixture(scope="module")
def population(tmp_path_factory, lfw_embeddings):
    """200k realistic distractors plus the first photo of every lfw-dev person, in one table."""
    uri = str(tmp_path_factory.mktemp("ann"))
    real = np.stack([v for vectors in lfw_embeddings.values() for v in vectors])
    distractors = EmbeddingDistribution.fit(real).sample(DISTRACTORS, np.random.default_rng(0))
    writer = IndexShard(uri, "population", 128, SearchConfig(mode="exact"))
    for start in range(0, DISTRACTORS, 50_000):
        chunk = range(start, min(start + 50_000, DISTRACTORS))
        writer.add(records([f"d{i}" for i in chunk], [f"distractor-{i}" for i in chunk], distractors[chunk]))
    writer.add(records([f"{name}-0" for name in lfw_embeddings], list(lfw_embeddings),
                       [vectors[0] for vectors in lfw_embeddings.values()]))
    return uri


@pytest.fixture(scope="module")
def shards(population, tmp_path_factory):
    index_dir = str(tmp_path_factory.mktemp("indexes"))
    exact = IndexShard(population, "population", 128, SearchConfig(mode="exact"))
    approximate = IndexShard(population, "population", 128, SearchConfig(mode="ann", index_dir=index_dir,
                                                                          scan_threads=2))
    assert approximate.stats()["search"] == "exact"  # nothing built yet
    built = approximate.build_index()
    assert built["search"] == "ann" and built["indexed_faces"] == DISTRACTORS + 162
    assert built["index_parts"] == 2  # scanned by two threads
    return exact, approximate, index_dir


def probes(lfw_embeddings) -> tuple[list[str], np.ndarray]:
    names = [name for name, vectors in lfw_embeddings.items() for _ in vectors[1:]]
    return names, np.stack([v for vectors in lfw_embeddings.values() for v in vectors[1:]])


def test_index_agrees_with_exact_search_on_real_queries(shards, lfw_embeddings):
    exact, approximate, _ = shards
    names, queries = probes(lfw_embeddings)
    assert len(queries) >= 350
    exact_top = [r[0][0] for r in exact.search_faces(queries, 1)]
    ann_top = [r[0][0] for r in approximate.search_faces(queries, 1)]
    agreement = np.mean([a == b for a, b in zip(exact_top, ann_top)])
    assert agreement >= 0.99
    exact_subjects = [r[0][0] for r in exact.search_subjects(queries, 1)]
    ann_subjects = [r[0][0] for r in approximate.search_subjects(queries, 1)]
    assert np.mean([a == b for a, b in zip(exact_subjects, ann_subjects)]) >= 0.99
    assert np.mean([s == n for s, n in zip(exact_subjects, names)]) >= 0.9  # hard, realistic distractors


def test_new_faces_deletes_and_subject_filters(shards, lfw_embeddings):
    _, approximate, _ = shards
    names, queries = probes(lfw_embeddings)
    query = queries[names.index("Ari_Fleischer")]
    assert approximate.search_faces(query, 1)[0][0][0] == "Ari_Fleischer-0"

    approximate.add(records(["late-face"], ["late subject"], [query]))  # after the build
    assert approximate.search_faces(query, 1)[0][0][:2] == ("late-face", "late subject")
    assert approximate.search_subjects(query, 2)[0][0][0] == "late subject"

    approximate.delete_ids(["late-face", "Ari_Fleischer-0"])
    found = [face_id for face_id, _, _ in approximate.search_faces(query, 10)[0]]
    assert "late-face" not in found and "Ari_Fleischer-0" not in found
    assert all(subject != "Ari_Fleischer" for subject, _, _ in approximate.search_subjects(query, 5)[0])

    only = approximate.search_faces(query, 3, subject="Alvaro_Uribe")[0]
    assert [face_id for face_id, _, _ in only] == ["Alvaro_Uribe-0"]


def test_saved_index_is_used_after_a_restart(shards, population, lfw_embeddings):
    _, approximate, index_dir = shards
    approximate.add(records(["after-save"], ["restart subject"], [lfw_embeddings["Alvaro_Uribe"][1]]))
    restarted = IndexShard(population, "population", 128, SearchConfig(mode="ann", index_dir=index_dir))
    stats = restarted.stats()
    assert stats["search"] == "ann" and stats["unindexed_faces"] >= 1 and stats["index_parts"] == 2
    assert restarted.search_faces(lfw_embeddings["Alvaro_Uribe"][1], 1)[0][0][0] == "after-save"
    assert stats["ram_bytes_per_face"] < 1100


def test_an_index_in_parts_finds_what_one_index_finds(lfw_embeddings):
    real = np.stack([v for vectors in lfw_embeddings.values() for v in vectors])
    vectors = EmbeddingDistribution.fit(real).sample(DISTRACTORS, np.random.default_rng(2))
    ids = [f"f{i}" for i in range(DISTRACTORS)]
    whole, parted = AnnIndex.build(vectors, ids, scan_threads=1), AnnIndex.build(vectors, ids, scan_threads=2)
    assert (len(whole.parts), len(parted.parts), len(parted)) == (1, 2, DISTRACTORS)
    _, queries = probes(lfw_embeddings)
    # same codebook, same codes: the same scores, and the same candidates wherever in the parts they lie,
    # up to the order of (frequent: fast scan scores are 8-bit) ties at the cut
    whole_scores, whole_rows = whole.index.search(queries, 100)
    parted_scores, parted_rows = parted.index.search(queries, 100)
    assert np.array_equal(whole_scores, parted_scores)
    for scores, a, b in zip(whole_scores, whole_rows, parted_rows):
        above_cut = scores > scores[-1]
        assert set(a[above_cut]) == set(b[above_cut])


def test_memory_budget_refuses_instead_of_crashing(tmp_path):
    shard = IndexShard(str(tmp_path), "small", 128, SearchConfig(mode="exact", memory_budget_bytes=3 * 2**20))
    rng = np.random.default_rng(1)
    shard.add(records([f"a{i}" for i in range(2000)], ["s"] * 2000, rng.normal(size=(2000, 128))))
    with pytest.raises(ShardFull, match="memory budget"):
        shard.add(records([f"b{i}" for i in range(5000)], ["s"] * 5000, rng.normal(size=(5000, 128))))
    assert shard.count() == 2000


def test_shard_killed_during_a_rebuild_comes_back_with_all_faces_and_an_index(server, tmp_path):
    import ray

    from actors.index_shard import ShardGroup

    search = SearchConfig(mode="auto", ann_min_faces=1000, index_dir=str(tmp_path / "indexes"))
    group = ShardGroup(999_001, 1, str(tmp_path / "faces"), 128, search)
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(60_000, 128)).astype(np.float32)
    for start in range(0, 60_000, 20_000):
        ray.get(group.actors[0].add.remote(records([f"k{i}" for i in range(start, start + 20_000)],
                                                   [f"s{i % 500}" for i in range(start, start + 20_000)],
                                                   vectors[start:start + 20_000])))
    group.actors[0].build_index.remote()
    time.sleep(0.3)
    ray.kill(group.actors[0], no_restart=False)
    deadline = time.monotonic() + 120
    stats = None
    while time.monotonic() < deadline:
        try:
            stats = ray.get(group.actors[0].stats.remote(), timeout=30)
            if stats["search"] == "ann" and stats["unindexed_faces"] == 0:
                break
        except ray.exceptions.RayActorError:
            pass
        time.sleep(0.5)
    assert stats is not None and stats["faces"] == 60_000
    assert stats["search"] == "ann" and stats["indexed_faces"] == 60_000
    found = ray.get(group.actors[0].search_faces.remote(vectors[123] / np.linalg.norm(vectors[123]), 1))
    assert found[0][0][0] == "k123"
    ray.get(group.actors[0].drop.remote())
    ray.kill(group.actors[0], no_restart=True)


def _own_vector_hits(shard: IndexShard, ids: list[str], vectors: np.ndarray) -> float:
    """Share of faces whose own vector finds them first."""
    found = shard.search_faces(vectors, 1)
    return float(np.mean([r[0][0] == face_id for r, face_id in zip(found, ids)]))


@pytest.fixture
def indexed_shard(tmp_path):
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((3000, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"f{i}" for i in range(len(vectors))]
    shard = IndexShard(str(tmp_path), "moves", 128, SearchConfig(mode="ann", candidates=64))
    shard.add(records(ids, [f"s{i % 300}" for i in range(len(ids))], vectors))
    return shard, ids, vectors


def test_indexed_faces_are_found_after_deletes_move_their_rows(indexed_shard):
    shard, ids, vectors = indexed_shard
    assert shard.build_index()["indexed_faces"] == len(ids)
    shard.delete_ids(["f10", "f20"])  # the last rows move into the holes
    kept = [i for i in range(len(ids)) if ids[i] not in ("f10", "f20")]
    assert _own_vector_hits(shard, [ids[i] for i in kept], vectors[kept]) == 1.0
    gone = [r[0][0] for r in shard.search_faces(vectors[[10, 20]], 1)]
    assert "f10" not in gone and "f20" not in gone

    shard.delete_ids(ids[:1500])  # many at once: the rows are compacted
    assert shard.stats()["search"] == "ann" and shard.count() == len(kept) - 1500 + 2
    rest = [i for i in kept if i >= 1500]
    assert _own_vector_hits(shard, [ids[i] for i in rest], vectors[rest]) == 1.0
    assert not {r[0][0] for r in shard.search_faces(vectors[:1500], 1)} & set(ids[:1500])


def test_a_build_maps_its_faces_to_rows_that_moved_while_it_ran(indexed_shard, monkeypatch):
    shard, ids, vectors = indexed_shard
    build = AnnIndex.build

    def build_then_delete(*args, **kwargs):
        index = build(*args, **kwargs)
        shard.delete_ids(ids[100:110])  # during the build, before the index is installed
        return index

    monkeypatch.setattr(AnnIndex, "build", build_then_delete)
    assert shard.build_index()["search"] == "ann"
    kept = [i for i in range(len(ids)) if not 100 <= i < 110]
    assert _own_vector_hits(shard, [ids[i] for i in kept], vectors[kept]) == 1.0
    assert not {r[0][0] for r in shard.search_faces(vectors[100:110], 1)} & set(ids[100:110])


def test_erasure_replaces_a_saved_index_that_holds_deleted_faces(tmp_path):
    from faceindex.ann_index import AnnIndex

    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((3000, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"f{i}" for i in range(len(vectors))]
    index_dir = tmp_path / "indexes"
    shard = IndexShard(str(tmp_path), "erased", 128, SearchConfig(mode="ann", candidates=64, index_dir=str(index_dir)))
    shard.add(records(ids, [f"s{i % 300}" for i in range(len(ids))], vectors))
    shard.build_index()
    saved = index_dir / "erased.ivf.npz"
    assert "f7" in set(AnnIndex.load(saved).face_ids)
    shard.delete_ids(["f7"])
    shard.erase_deleted()
    deadline = time.monotonic() + 120
    # The codes of the deleted face go with the old file; the rebuilt index is saved, then installed.
    while "f7" in set(AnnIndex.load(saved).face_ids) or shard.stats()["indexed_faces"] != len(ids) - 1:
        assert time.monotonic() < deadline, "the saved index still holds the deleted face"
        time.sleep(0.5)
    assert len(AnnIndex.load(saved).face_ids) == len(ids) - 1



@pytest.fixture(scope="module")
def saved_index(tmp_path_factory) -> tuple[Path, list[str], np.ndarray]:
    """A folder holding table "saved" of 3000 random faces and its saved index (indexes/saved.ivf.npz)."""
    folder = tmp_path_factory.mktemp("saved")
    rng = np.random.default_rng(9)
    vectors = rng.standard_normal((3000, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"face-{i}-é" for i in range(len(vectors))]  # not ASCII: packed as UTF-8, counted in characters
    shard = IndexShard(str(folder), "saved", 128, saved_search(folder))
    shard.add(records(ids, [f"s{i % 300}" for i in range(len(ids))], vectors))
    shard.build_index()
    return folder, ids, vectors


def saved_search(folder: Path) -> SearchConfig:
    return SearchConfig(mode="ann", candidates=64, index_dir=str(folder / "indexes"))


def copy_of(saved_index, tmp_path: Path) -> Path:
    """A copy of the saved_index folder of its own for one test."""
    shutil.copytree(saved_index[0], tmp_path / "copy")
    return tmp_path / "copy"


def test_packed_ids_keep_every_id_and_its_boundaries():
    ids = ["a", "bc", "ü-1", "😀x", "d\x00e", "\udcff"]
    packed = PackedIds.pack(ids)
    assert packed.unpack() == ids and list(packed) == ids and len(packed) == 6
    assert packed.equals(ids) and not packed.equals(ids[:5]) and not packed.equals(["ab", "c", *ids[2:]])
    assert not packed.equals(["a", "bc", "ü-2", *ids[3:]])
    with pytest.raises(ValueError, match="do not add up"):
        PackedIds(packed.text, packed.lengths + 1)


def test_a_restarted_shard_restores_its_saved_index_with_packed_ids(saved_index, tmp_path):
    _, ids, vectors = saved_index
    folder = copy_of(saved_index, tmp_path)
    with np.load(folder / "indexes" / "saved.ivf.npz") as layout:
        assert sorted(layout.files) == ["id_lengths", "id_text", "part0"]
        assert layout["id_text"].nbytes <= 12 * len(ids)  # "face-<i>-é": at most 12 bytes of UTF-8 each
    restarted = IndexShard(str(folder), "saved", 128, saved_search(folder))  # rows in the saved order
    restarted.delete_ids(ids[:5])  # the next restart's rows no longer begin with the saved ids
    for shard in (restarted, IndexShard(str(folder), "saved", 128, saved_search(folder))):
        stats = shard.stats()
        assert (stats["search"], stats["indexed_faces"], stats["unindexed_faces"]) == ("ann", len(ids), 0)
        assert stats["last_build_seconds"] == 0.0  # loaded, not built
        assert [hits[0][0] for hits in shard.search_faces(vectors[5:2000], 1)] == ids[5:2000]
        assert not {hits[0][0] for hits in shard.search_faces(vectors[:5], 1)} & set(ids[:5])


def test_an_index_saved_in_the_older_layout_is_still_read(saved_index, tmp_path):
    _, ids, vectors = saved_index
    folder = copy_of(saved_index, tmp_path)
    saved = folder / "indexes" / "saved.ivf.npz"
    with np.load(saved) as layout:
        parts = {key: layout[key] for key in layout.files if key.startswith("part")}
    np.savez(saved, ids=np.array(ids, dtype=str), **parts)  # the ids as a numpy unicode array
    restarted = IndexShard(str(folder), "saved", 128, saved_search(folder))
    stats = restarted.stats()
    assert (stats["search"], stats["indexed_faces"], stats["last_build_seconds"]) == ("ann", len(ids), 0.0)
    assert [hits[0][0] for hits in restarted.search_faces(vectors[:2000], 1)] == ids[:2000]


def test_a_saved_index_whose_ids_do_not_add_up_is_ignored(saved_index, tmp_path):
    _, ids, vectors = saved_index
    folder = copy_of(saved_index, tmp_path)
    saved = folder / "indexes" / "saved.ivf.npz"
    with np.load(saved) as layout:
        arrays = {key: layout[key] for key in layout.files}
    arrays["id_lengths"][-1] += 1  # text and lengths disagree: a damaged or foreign file
    np.savez(saved, **arrays)
    assert AnnIndex.load(saved) is None
    restarted = IndexShard(str(folder), "saved", 128, saved_search(folder))
    assert (restarted.stats()["search"], restarted.stats()["indexed_faces"]) == ("exact", 0)
    assert [hits[0][0] for hits in restarted.search_faces(vectors[:2000], 1)] == ids[:2000]
