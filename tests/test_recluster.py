"""The re-clustering job of a service's whole sighting history (Ray Data, the identity keeper,
PostgreSQL): it heals a wrong split and a wrong merge of lfw-dev strangers, keeping the ids of the
clusters that survive and never giving a gone id again. Real Ray, PostgreSQL, LanceDB, HTTP."""

from __future__ import annotations

import asyncio

from batch_jobs.recluster import cluster_labels, recluster
from facecore.cluster_scores import cluster_scores
from facecore.graph_linkage import cluster_faces
from facecore.similarity import DEFAULT_RECOGNITION_THRESHOLD, cosine_from_similarity
from faces_cli.main import main
from faces_settings import get_settings
from serve_app.client import FaceApiError, FaceClient
from store.control import ControlPlane
from video_samples import photos

PERSON_A, PERSON_B, PERSON_C = "Zinedine_Zidane", "Yao_Ming", "Vicente_Fox"


def _identities_of_sightings(client: FaceClient) -> dict[str, int]:
    return {sighting["id"]: identity["id"] for identity in client.list_identities(size=100)["identities"]
            for sighting in client.identity_sightings(identity["id"], size=100)}


def test_reclustering_heals_a_wrong_split_and_merge_keeping_surviving_ids(server, admin, data_dir, monkeypatch,
                                                                          capsys):
    application = admin.create_application("recluster")
    created = admin.create_service(application["id"], "reclustered", "recognition")
    with FaceClient(server.url, api_key=created["api_key"], timeout=60) as client:
        seen = {name: [client.recognize(photo, limit=1, remember_unknowns=True)["result"][0]["sighting"]
                       for photo in photos(data_dir, name)] for name in (PERSON_A, PERSON_B, PERSON_C)}
        first = {name: {s["identity"] for s in sightings} for name, sightings in seen.items()}
        assert all(len(ids) == 1 and None not in ids for ids in first.values()), first
        a, b, c = (first[name].pop() for name in (PERSON_A, PERSON_B, PERSON_C))
        assert len({a, b, c}) == 3
        # mistakes made by hand: one of A's sightings split off, C merged into B
        split_off = client.split_identity(a, [seen[PERSON_A][-1]["id"]])["identity"]
        client.merge_identities(b, c)

        async def job():
            control = await ControlPlane.connect(server.settings.postgres_dsn)
            try:
                return await recluster(server.settings, control, await control.get_service(created["id"]))
            finally:
                await control.close()

        result = asyncio.run(job())
        assert result.sightings == sum(len(s) for s in seen.values()) and result.identities == 3
        after = _identities_of_sightings(client)
        people = {name: {after[s["id"]] for s in sightings} for name, sightings in seen.items()}
        assert all(len(ids) == 1 for ids in people.values()), people
        assert people[PERSON_A] == {a}, "the larger part keeps its id, the split-off sighting rejoins it"
        b_and_c = people[PERSON_B] | people[PERSON_C]
        assert b in b_and_c and len(b_and_c) == 2, "one of the wrongly merged keeps the id, the other is new"
        assert (b_and_c - {b}).pop() > max(a, b, c, split_off), "a gone id is never given again"
        for gone in (split_off, c):
            try:
                client.get_identity(gone)
                raise AssertionError(f"identity {gone} should be gone")
            except FaceApiError as exc:
                assert exc.status == 404
        # the keeper follows: another photo of C joins C's new identity online
        again = client.recognize(photos(data_dir, PERSON_C)[0], limit=1, remember_unknowns=True)
        assert again["result"][0]["sighting"]["identity"] == people[PERSON_C].pop()

    # the command runs the job again: a history that already clusters so keeps every id
    monkeypatch.setenv("FACES_POSTGRES_DSN", server.settings.postgres_dsn)
    monkeypatch.setenv("FACES_DATA_DIR", str(server.settings.data_dir))
    get_settings.cache_clear()
    try:
        assert main(["unknowns", "recluster", "--service", "recluster/reclustered"]) == 0
        assert "re-clustered into 3 identities, 0 sightings changed identity" in capsys.readouterr().out
        assert main(["unknowns", "recluster", "--service", "no-such-service"]) == 2
    finally:
        get_settings.cache_clear()


def test_the_job_searches_the_graph_through_hnsw_on_ray_workers(server, lfw_faces):
    """The job's path for a large history (the HNSW index built by a task, pickled to the Ray Data
    tasks that search it), forced on lfw-dev: its clusters score as the exact graph's do in this
    process."""
    vectors, people, _ = lfw_faces
    threshold = cosine_from_similarity(DEFAULT_RECOGNITION_THRESHOLD)
    labels = cluster_labels(vectors, threshold, approximate=True)
    assert len(labels) == len(vectors)
    assert cluster_scores(labels.tolist(), people.tolist()) == cluster_scores(
        cluster_faces(vectors, threshold).tolist(), people.tolist())
