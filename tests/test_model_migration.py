"""Migration between embedding models of different dimensions while serving: an SFace service (128-d)
becomes a fusion service (256-d) while a client keeps asking it who lfw-dev people are."""

from __future__ import annotations

import threading
import time

import pytest

from bulk_helpers import stored_faces, wait_for_job
from facecore.embed import model_id
from faceindex.layout import ServiceLayout
from serve_app.client import FaceClient
from store.faces import FaceTable

PEOPLE = 12


def _rank_1(api: FaceClient, probes: list) -> dict[str, str]:
    """Per person, the subject named first for their second photo, whatever its similarity."""
    return {name: api.recognize(photo, limit=1, threshold=0.0)["result"][0]["subjects"][0]["subject"]
            for name, photo in probes}


@pytest.fixture(scope="module")
def migration(server, admin, data_dir):
    app = admin.create_application("model-migration")
    service = admin.create_service(app["id"], "sface-to-fusion", "recognition", shards=2)
    people = sorted(folder for folder in (data_dir / "lfw-dev").iterdir()
                    if folder.is_dir() and len(list(folder.glob("*.jpg"))) >= 2)[-PEOPLE - 1:]
    walk_in, people = people[0], people[1:]
    api = FaceClient(server.url, api_key=service["api_key"])
    for person in people:
        api.add_face(sorted(person.glob("*.jpg"))[0], subject=person.name)
    probes = [(person.name, sorted(person.glob("*.jpg"))[1]) for person in people]
    before = _rank_1(api, probes)

    stop, failures, served = threading.Event(), [], []

    def keep_recognizing():
        with FaceClient(server.url, api_key=service["api_key"]) as client:
            while not stop.is_set():
                name, photo = probes[len(served) % len(probes)]
                try:
                    client.recognize(photo, limit=1)
                    served.append(name)
                except Exception as exc:  # every failure is the test's failure
                    failures.append(repr(exc))
                    served.append(None)

    client_thread = threading.Thread(target=keep_recognizing, daemon=True)
    client_thread.start()
    job = admin.start_migrate_job(service["id"], model="fusion")
    added_meanwhile = api.add_face(sorted(walk_in.glob("*.jpg"))[0], subject=walk_in.name)["image_id"]
    job = wait_for_job(admin, job["id"])
    time.sleep(2)  # requests after the switch too
    stop.set()
    client_thread.join(timeout=60)
    after = _rank_1(api, probes)
    walk_in_answer = _rank_1(api, [(walk_in.name, sorted(walk_in.glob("*.jpg"))[1])])
    yield {"service": service, "job": job, "before": before, "after": after, "failures": failures,
           "served": served, "added_meanwhile": added_meanwhile, "walk_in": (walk_in.name, walk_in_answer),
           "updated": admin.get_service(service["id"])}
    api.close()
    admin.delete_application(app["id"])


def test_no_request_failed_while_migrating(migration):
    assert migration["job"]["status"] == "succeeded", migration["job"]
    assert migration["failures"] == []
    assert len(migration["served"]) >= 5


def test_service_switched_to_the_new_model(migration):
    assert migration["updated"]["model"] == "fusion"


def test_rank_1_unchanged_or_better(migration):
    before, after = migration["before"], migration["after"]
    assert sum(name == found for name, found in after.items()) >= sum(name == found for name, found in before.items())
    assert all(name == found for name, found in after.items()), after


def test_every_face_re_embedded_into_new_tables(server, migration):
    """The fusion layout holds every face (with the one added during the job), each re-embedded with
    the fusion; the SFace layout's tables are gone."""
    service = migration["service"]
    rows = stored_faces(server.settings, service["id"], shards=2, model="fusion")
    assert len(rows) == PEOPLE + 1
    assert {row["model"] for row in rows} == {model_id("fusion")}
    assert {len(row["embedding"]) for row in rows} == {256}
    assert migration["added_meanwhile"] in {row["face_id"] for row in rows}
    name, answer = migration["walk_in"]
    assert answer == {name: name}
    old = ServiceLayout(service["id"], 2)
    assert not any(FaceTable.exists(server.settings.faces_uri, old.table_name(shard)) for shard in (0, 1))
