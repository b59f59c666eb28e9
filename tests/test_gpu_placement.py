"""Where the GPU path is switched on: embedder replicas and bulk-job actors given a GPU fraction ask
for the GPU pipeline, shards given one search on it, and a shard searching through a torch matrix
answers exactly like a host shard through appends, in-place replacements, moves and deletes."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import numpy as np

from faceindex.config import SearchConfig
from faceindex.shard import IndexShard
from actors.index_shard import search_config
from batch_jobs.embedding import PoolPlan, pipeline_config
from faces_settings import Settings
from store.faces import FaceRecord
from test_gpu_path import _unit


def test_gpu_replicas_and_pool_actors_ask_for_the_gpu_pipeline(tmp_path):
    settings = Settings(data_dir=tmp_path, embedder_num_gpus=0.25, shard_num_gpus=0.1)
    assert settings.pipeline_config(gpu=settings.embedder_num_gpus > 0).gpu
    assert not Settings(data_dir=tmp_path).pipeline_config().gpu
    gpu_plan = PoolPlan(actors=4, num_cpus=1.0, num_gpus=0.25, threads=1)
    assert pipeline_config(settings, gpu_plan).gpu and pipeline_config(settings, gpu_plan).threads == 1
    assert not pipeline_config(settings, dataclasses.replace(gpu_plan, num_gpus=0.0)).gpu
    assert search_config(settings).device == "cuda"
    assert search_config(Settings(data_dir=tmp_path)).device == "numpy"


def _records(rng, count: int, start: int = 0) -> list[FaceRecord]:
    vectors = _unit(rng, count)
    return [FaceRecord(face_id=f"f{start + i}", subject=f"s{(start + i) % 37}", embedding=vectors[i],
                       model="sface@test", crop=b"", source=None, created_at=datetime.now(timezone.utc))
            for i in range(count)]


def test_shard_with_device_search_answers_like_the_host_shard(tmp_path):
    rng = np.random.default_rng(11)
    host = IndexShard(str(tmp_path / "host"), "t", 128, SearchConfig(mode="exact"))
    device = IndexShard(str(tmp_path / "device"), "t", 128, SearchConfig(mode="exact", device="cpu"))

    def same(queries):
        """Same faces and subjects in the same order; cosines equal up to float32 summation order."""
        for got, want, score_at in ((device.search_faces(queries, 7), host.search_faces(queries, 7), 2),
                                    (device.search_subjects(queries, 5), host.search_subjects(queries, 5), 1),
                                    (device.search_subjects(queries, 37), host.search_subjects(queries, 37), 1)):
            names = [[tuple(v for i, v in enumerate(hit) if i != score_at) for hit in hits] for hits in want]
            assert [[tuple(v for i, v in enumerate(hit) if i != score_at) for hit in hits] for hits in got] == names
            np.testing.assert_allclose([[hit[score_at] for hit in hits] for hits in got],
                                       [[hit[score_at] for hit in hits] for hits in want], atol=1e-6)

    records = _records(rng, 1500)
    for shard in (host, device):
        shard.add(records)
    queries = np.stack([records[i].embedding for i in (0, 10, 900)]) + 0.05 * _unit(rng, 3)
    same(queries)
    more = _records(rng, 300, start=1500)  # appended: uploaded on the next search
    replaced = [dataclasses.replace(r, embedding=_unit(rng, 1)[0]) for r in records[10:20]]  # changed in place
    for shard in (host, device):
        shard.add(more)
        shard.add(replaced)
        shard.delete_ids([f"f{i}" for i in range(0, 900, 3)])  # rows moved and removed
    same(np.stack([replaced[0].embedding, more[5].embedding, records[901].embedding]))
    same(queries)
    assert device.search_faces(replaced[0].embedding, 1)[0][0][0] == "f10"
    assert device.search_subjects(more[5].embedding, 1)[0][0][2] == "f1505"
