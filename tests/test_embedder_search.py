"""The embedder's subject searches: concurrent recognize requests share one call per service's shards."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import numpy as np
import pytest
import ray

from actors.embedder import SearchCoalescer
from actors.face_batch import SubjectSearch
from faceindex.config import SearchConfig
from actors.index_shard import ShardGroup, ShardUnavailable
from store.faces import FaceRecord

NOW = datetime.now(timezone.utc)


class CountingShardGroup(ShardGroup):
    """Real shard actors; counts the search calls made through the group."""

    searches = 0

    async def search_subjects(self, queries, k):
        self.searches += 1
        return await super().search_subjects(queries, k)


def unit_rows(rng, n: int) -> np.ndarray:
    rows = rng.normal(size=(n, 128)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def two_shard_group(server, tmp_path):
    group = CountingShardGroup(999_101, 2, str(tmp_path / "faces"), 128, SearchConfig(mode="exact"))
    vectors = unit_rows(np.random.default_rng(3), 40)
    asyncio.run(group.add([FaceRecord(f"f{i}", f"person{i % 10}", vectors[i], "sface@test", b"", None, NOW)
                           for i in range(40)]))
    yield group, vectors
    asyncio.run(group.drop())


def test_concurrent_searches_of_a_service_share_one_call_and_keep_their_own_k(two_shard_group):
    group, vectors = two_shard_group
    asks = [(SubjectSearch(999_101, 2, 1, None), vectors[0:1]), (SubjectSearch(999_101, 2, 3, None), vectors[5:8]),
            (SubjectSearch(999_101, 2, 2, None), vectors[11:13])]

    async def run():
        coalescer = SearchCoalescer(lambda search: group)
        together = await asyncio.gather(*(coalescer.search(search, queries) for search, queries in asks))
        calls = group.searches
        alone = [await group.search_subjects(queries, search.k) for search, queries in asks]
        return together, calls, alone

    together, calls, alone = asyncio.run(run())
    assert calls == 1
    # the same subjects and faces in the same order; cosines to float precision (one larger product)
    assert [[[(s, f) for s, _, f in face] for face in per] for per in together] == \
           [[[(s, f) for s, _, f in face] for face in per] for per in alone]
    assert np.allclose([c for per in together for face in per for _, c, _ in face],
                       [c for per in alone for face in per for _, c, _ in face], atol=1e-5)
    assert [len(per_face) for per_face in together[1]] == [3, 3, 3]
    assert together[1][0][0][0] == "person5" and together[1][0][0][2] == "f5"  # its own face first


def test_an_unavailable_service_fails_only_its_own_searches(two_shard_group, tmp_path):
    group, vectors = two_shard_group
    gone = ShardGroup(999_102, 1, str(tmp_path / "gone"), 128, SearchConfig(mode="exact"))
    ray.kill(gone.actors[0], no_restart=True)
    groups = {999_101: group, 999_102: gone}

    async def run():
        coalescer = SearchCoalescer(lambda search: groups[search.service_id])
        return await asyncio.gather(coalescer.search(SubjectSearch(999_102, 1, 1, None), vectors[:1]),
                                    coalescer.search(SubjectSearch(999_101, 2, 1, None), vectors[:1]),
                                    return_exceptions=True)

    failed, answered = asyncio.run(run())
    assert isinstance(failed, ShardUnavailable)
    assert answered == [[("person0", pytest.approx(1.0, abs=1e-5), "f0")]]
