"""A recognition service's sightings are bounded: a quota of sightings (recognize refuses to remember
beyond it, video events keep no sighting), and a retention after which sightings, their crops and
identities left without sightings are erased. Real Ray, PostgreSQL, LanceDB, HTTP."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import ray

from actors.unknown_faces import new_sighting
from actors.video_recorder import NAMESPACE, ensure_recorder
from actors.video_supervisor import SUPERVISOR_NAME
from facecore.images import encode_jpeg
from serve_app.client import FaceApiError, FaceClient
from serve_app.quotas import QUOTA_CACHE_S
from store.control import ControlPlane
from video_samples import photos

PERSON_A, PERSON_B = "Vladimir_Putin", "Bill_Clinton"


def _status(call) -> int:
    with pytest.raises(FaceApiError) as error:
        call()
    return error.value.status


def _control(server, work):
    async def run():
        control = await ControlPlane.connect(server.settings.postgres_dsn)
        try:
            return await work(control)
        finally:
            await control.close()

    return asyncio.run(run())


def test_the_sightings_quota_stops_remembering_not_recognizing(server, admin, data_dir):
    application = admin.create_application("sighting-quota")
    service = admin.create_service(application["id"], "few-sightings", "recognition")
    assert admin.get_quotas(service["id"])["sightings"] == server.settings.quota_sightings
    assert admin.set_quotas(service["id"], sightings=2)["custom"] == ["sightings"]
    pictures = photos(data_dir, PERSON_A)
    with FaceClient(server.url, api_key=service["api_key"], timeout=60) as client:
        for picture in pictures[:2]:
            assert client.recognize(picture, limit=1, remember_unknowns=True)["result"][0]["sighting"]["id"]
        for picture in pictures[2:4]:  # each of the 2 ingress replicas may pass the quota by what it saw last
            try:
                client.recognize(picture, limit=1, remember_unknowns=True)
            except FaceApiError as refused:
                assert refused.status == 403
        time.sleep(QUOTA_CACHE_S + 0.5)  # every replica has counted the stored sightings again
        for _ in range(2):
            with pytest.raises(FaceApiError) as refused:
                client.recognize(pictures[0], limit=1, remember_unknowns=True)
            assert refused.value.status == 403 and refused.value.code == 32
            assert "quota of 2 sightings" in refused.value.message
        assert "sighting" not in client.recognize(pictures[0], limit=1)["result"][0]  # recognizing still works
        stored = sum(identity["sightings"] for identity in client.list_identities(size=100)["identities"])
        assert 2 <= stored <= 4

    # a video event's best shot is not remembered beyond its watchlist service's quota
    admin.set_quotas(service["id"], sightings=stored + 1)
    stored_service = _control(server, lambda control: control.get_service(service["id"]))
    recorder = ensure_recorder(server.settings)
    shots = [new_sighting(datetime.now(timezone.utc), "stream:1", {"x_min": 0, "y_min": 0, "x_max": 1, "y_max": 1,
                                                                  "probability": 0.9}, 0.9, None,
                          np.eye(1, 128, n, dtype=np.float32)[0]) for n in range(2)]
    crop = encode_jpeg(np.full((112, 112, 3), 128, np.uint8))  # a 112 chip: served as stored
    assert [ray.get(recorder.remember_sighting.remote(stored_service, 0.95, shot, crop, "sface"), timeout=60)
            for shot in shots] == [True, False]
    with FaceClient(server.url, api_key=service["api_key"]) as client:
        assert client.sighting_image(shots[0].id) == crop
        assert _status(lambda: client.sighting_image(shots[1].id)) == 404
    admin.delete_application(application["id"])


def test_sightings_past_the_retention_are_erased_with_their_crops_and_identities(server, admin, data_dir):
    application = admin.create_application("sighting-retention")
    service = admin.create_service(application["id"], "forgetful", "recognition")
    old_days = server.settings.sighting_retention_days + 1
    with FaceClient(server.url, api_key=service["api_key"], timeout=60) as client:
        seen = {name: [client.recognize(photo, limit=1, remember_unknowns=True)["result"][0]["sighting"]
                       for photo in photos(data_dir, name)[:3]] for name in (PERSON_A, PERSON_B)}
        old_identity = seen[PERSON_A][0]["identity"]
        assert {s["identity"] for s in seen[PERSON_A]} == {old_identity}
        old_ids = [s["id"] for s in seen[PERSON_A]]

        async def backdate(control):
            await control.pool.execute("UPDATE sightings SET seen_at = now() - make_interval(days => $2) "
                                       "WHERE id = ANY($1::uuid[])", old_ids, int(old_days))

        _control(server, backdate)
        supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=NAMESPACE)
        # (the supervisor's own round, every minute, may have erased them just before)
        assert ray.get(supervisor.expire_sightings.remote(), timeout=120) in (len(old_ids), 0)

        assert _status(lambda: client.get_identity(old_identity)) == 404
        assert all(_status(lambda: client.sighting_image(sighting)) == 404 for sighting in old_ids)
        left = client.list_identities()["identities"]
        assert [(i["id"], i["sightings"]) for i in left] == [(seen[PERSON_B][0]["identity"], 3)]
        found = client.search_sightings(photos(data_dir, PERSON_A)[3], limit=10)["result"][0]
        assert not {s["id"] for s in found} & set(old_ids)
        assert client.sighting_image(seen[PERSON_B][0]["id"])  # the others keep their crops
        # the keeper forgot the erased identity: the person seen again starts a new one
        back = client.recognize(photos(data_dir, PERSON_A)[3], limit=1, remember_unknowns=True)
        assert back["result"][0]["sighting"]["identity"] not in (None, old_identity)
    assert ray.get(supervisor.expire_sightings.remote(), timeout=120) == 0
    admin.delete_application(application["id"])
