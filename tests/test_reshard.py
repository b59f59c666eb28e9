"""Re-sharding a service 1 -> 4: every face exactly once, the same answers, the API follows."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from actors.index_shard import ShardGroup
from batch_jobs.reshard import reshard
from facecore.models import SFACE
from store.control import ControlPlane
from faceindex.layout import ServiceLayout
from store.faces import FaceRecord, FaceTable


def test_reshard_one_to_four_keeps_every_face_once_and_answers_the_same(server, admin, lfw_image):
    import asyncio

    settings = server.settings
    application = admin.create_application("reshard")
    created = admin.create_service(application["id"], "resharded", "recognition")
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(3000, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = datetime.now(timezone.utc)
    records = [FaceRecord(f"face-{i}", f"subject-{i % 300}", vectors[i], "sface@test", b"jpeg", None, now)
               for i in range(3000)]
    queries = vectors[:40] + 0.05 * rng.normal(size=(40, 128)).astype(np.float32)

    async def scenario():
        control = await ControlPlane.connect(settings.postgres_dsn)
        try:
            service = await control.get_service(created["id"])
            before = ShardGroup.for_service(service.id, 1, settings, replicas=None)
            await before.add(records)
            answers_before = await before.search_subjects(queries, 3)
            result = await reshard(settings, control, service, 4)
            after_service = await control.get_service(service.id)
            after = ShardGroup.for_service(service.id, 4, settings, replicas=None)
            answers_after = await after.search_subjects(queries, 3)
            return result, after_service, answers_before, answers_after
        finally:
            await control.close()

    result, service, answers_before, answers_after = asyncio.run(scenario())
    assert result.faces == 3000 and service.shards == 4
    held = [FaceTable.open(settings.faces_uri, ServiceLayout(service.id, 4).table_name(shard), SFACE.embedding_dim).face_ids()
            for shard in range(4)]
    every = [face_id for ids in held for face_id in ids]
    assert len(every) == 3000 and set(every) == {r.face_id for r in records}
    assert all(len(ids) > 500 for ids in held)  # spread over the four shards
    assert [[(subject, face) for subject, _, face in r] for r in answers_after] == \
        [[(subject, face) for subject, _, face in r] for r in answers_before]
    assert np.allclose([c for r in answers_after for _, c, _ in r], [c for r in answers_before for _, c, _ in r],
                       atol=1e-5)
    assert not (FaceTable.exists(settings.faces_uri, ServiceLayout(service.id, 1).table_name(0)))

    api_key = admin.regenerate_key(service.id)["api_key"]
    from serve_app.client import FaceClient

    listed = FaceClient(server.url, api_key=api_key).list_faces(size=1)
    assert listed["total_elements"] == 3000
