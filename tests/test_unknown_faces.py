"""Unknown faces through the live platform: lfw-dev photos recognized with remember_unknowns become
sightings, the strangers among them identities (one per person), and past sightings are searchable."""

from __future__ import annotations

from collections import defaultdict
import json
from datetime import datetime, timedelta, timezone

import pytest

from faces_cli.main import main

from serve_app.client import FaceApiError, FaceClient

ENROLLED = 2      # people enrolled as subjects (their first photo)
STRANGERS = 6     # people never enrolled
PHOTOS_SEEN = 3   # photos of each person sent with remember_unknowns; the 4th is kept for searching


def _people(data_dir) -> dict[str, list]:
    folders = sorted(p for p in (data_dir / "lfw-dev").iterdir() if p.is_dir())
    chosen = [f for f in folders if len(list(f.glob("*.jpg"))) >= PHOTOS_SEEN + 1][:ENROLLED + STRANGERS]
    return {folder.name: sorted(folder.glob("*.jpg")) for folder in chosen}


def _status(call) -> int:
    with pytest.raises(FaceApiError) as error:
        call()
    return error.value.status


@pytest.fixture(scope="module")
def seen(server, admin, data_dir):
    """Two recognition services; in the first, people seen: sightings per person in the order sent."""
    application = admin.create_application("test-unknowns")
    services = [admin.create_service(application["id"], f"unknowns-{n}", "recognition") for n in "ab"]
    keys = [service["api_key"] for service in services]
    client, other = FaceClient(server.url, api_key=keys[0], timeout=60), FaceClient(server.url, api_key=keys[1])
    people = _people(data_dir)
    names = list(people)
    for name in names[:ENROLLED]:
        client.add_face(people[name][0], subject=name)
    sightings = defaultdict(list)
    for round_ in range(PHOTOS_SEEN):
        for n, name in enumerate(names):
            if n < ENROLLED and round_ == 0:
                continue  # that photo is enrolled
            face = client.recognize(people[name][round_], limit=1, remember_unknowns=True,
                                    source=f"cam-{round_ % 2}")["result"][0]
            sightings[name].append({**face["sighting"], "subject": None if face["unknown"]
                                    else face["subjects"][0]["subject"]})
    yield {"client": client, "other": other, "service_id": services[0]["id"], "key": keys[0], "people": people,
           "known": names[:ENROLLED], "strangers": names[ENROLLED:], "sightings": sightings}
    client.close()
    other.close()


def test_each_stranger_becomes_one_identity_and_known_subjects_stay_known(seen):
    client, sightings = seen["client"], seen["sightings"]
    for name in seen["known"]:
        assert all(s["subject"] == name and s["identity"] is None for s in sightings[name]), sightings[name]
    identity_of = {}
    for name in seen["strangers"]:
        assert all(s["subject"] is None for s in sightings[name])
        identities = {s["identity"] for s in sightings[name]} - {None}
        assert len(identities) == 1, (name, sightings[name])
        identity_of[name] = identities.pop()
    assert len(set(identity_of.values())) == STRANGERS  # strangers never merged with each other

    listed = {row["id"]: row for row in client.list_identities(size=100)["identities"]}
    assert set(listed) == set(identity_of.values())  # and never with known subjects
    for name, identity in identity_of.items():
        row = listed[identity]
        assigned = [s for s in sightings[name] if s["identity"] == identity]
        assert row["sightings"] == len(assigned) and row["first_seen"] <= row["last_seen"]
        assert set(row["sources"]) <= {"cam-0", "cam-1"} and row["best_sighting"] in {s["id"] for s in assigned}
        assert {s["id"] for s in client.identity_sightings(identity)} == {s["id"] for s in assigned}
        assert client.sighting_image(row["best_sighting"])[:2] == b"\xff\xd8"  # a JPEG crop


def test_search_by_a_new_photo_finds_that_persons_earlier_sightings_first(seen):
    client = seen["client"]
    for name in (seen["strangers"][0], seen["known"][0]):
        earlier = {s["id"] for s in seen["sightings"][name]}
        found = client.search_sightings(seen["people"][name][PHOTOS_SEEN], limit=10)["result"][0]
        assert {hit["id"] for hit in found[:len(earlier)]} == earlier, (name, found)
        assert found[0]["similarity"] > found[len(earlier)]["similarity"] and found[0]["crop"]
    name = seen["strangers"][1]
    embedding = client.recognize(seen["people"][name][PHOTOS_SEEN], limit=1,
                                 face_plugins="calculator")["result"][0]["embedding"]
    only_cam1 = client.search_sightings_embeddings([embedding], limit=5, source="cam-1")["result"][0]
    assert only_cam1 and {hit["source"] for hit in only_cam1} == {"cam-1"}
    assert only_cam1[0]["id"] in {s["id"] for s in seen["sightings"][name]}
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert client.search_sightings_embeddings([embedding], since=future)["result"] == [[]]
    past = client.search_sightings_embeddings([embedding], limit=3, until=future)["result"][0]
    assert past[0]["id"] in {s["id"] for s in seen["sightings"][name]}


def _identity(seen, name: str) -> int:
    return next(s["identity"] for s in seen["sightings"][name] if s["identity"] is not None)


def test_merge_split_ignore_and_promote(seen):
    client = seen["client"]
    first, second, ignored, promoted = seen["strangers"][2:6]
    a, b = _identity(seen, first), _identity(seen, second)
    a_count, b_count = client.get_identity(a)["sightings"], client.get_identity(b)["sightings"]
    merged = client.merge_identities(a, b)
    assert merged["id"] == a and merged["sightings"] == a_count + b_count
    assert _status(lambda: client.get_identity(b)) == 404
    moved = [s["id"] for s in seen["sightings"][second] if s["identity"] == b]
    new = client.split_identity(a, moved)["identity"]
    assert new not in (a, b)
    assert {s["id"] for s in client.identity_sightings(new)} == set(moved)
    assert client.get_identity(a)["sightings"] == a_count

    c = _identity(seen, ignored)
    assert client.ignore_identity(c)["ignored"]
    assert c not in {row["id"] for row in client.list_identities(size=100)["identities"]}
    assert c in {row["id"] for row in client.list_identities(size=100, ignored=True)["identities"]}
    again = client.recognize(seen["people"][ignored][PHOTOS_SEEN], limit=1, remember_unknowns=True)["result"][0]
    assert again["sighting"]["identity"] == c  # an ignored stranger does not come back as someone new

    d = _identity(seen, promoted)
    assert client.promote_identity(d, subject=promoted, faces=2) == {"subject": promoted, "enrolled": 2}
    assert len(client.list_faces(subject=promoted)["faces"]) == 2
    assert _status(lambda: client.get_identity(d)) == 404
    face = client.recognize(seen["people"][promoted][PHOTOS_SEEN], limit=1, remember_unknowns=True)["result"][0]
    assert face["subjects"][0]["subject"] == promoted and face["sighting"]["identity"] is None


def test_identities_survive_a_restart_of_the_identity_keeper(seen):
    import ray

    from actors.identity_keeper import NAMESPACE, keeper_name

    keeper = ray.get_actor(keeper_name(seen["service_id"]), namespace=NAMESPACE)
    ray.kill(keeper, no_restart=False)  # its process dies; Ray restarts it empty
    name = seen["strangers"][0]
    face = seen["client"].recognize(seen["people"][name][PHOTOS_SEEN], limit=1, remember_unknowns=True)["result"][0]
    assert face["sighting"]["identity"] == _identity(seen, name)
    ray.kill(keeper, no_restart=False)  # a change recorded before the keeper is reloaded is in what it loads
    client, kept = seen["client"], _identity(seen, seen["strangers"][1])
    before = client.get_identity(kept)["sightings"]
    part = client.split_identity(kept, [client.identity_sightings(kept)[0]["id"]])["identity"]
    ray.kill(keeper, no_restart=False)  # a change recorded before the keeper is reloaded is in what it loads
    assert client.merge_identities(kept, part)["sightings"] == before
    face = client.recognize(seen["people"][seen["strangers"][1]][PHOTOS_SEEN], limit=1,
                            remember_unknowns=True)["result"][0]
    assert face["sighting"]["identity"] == kept
    ids = {s["identity"] for sightings in seen["sightings"].values() for s in sightings} - {None}
    assert part > max(ids)  # ids are never given twice, even after merges


def test_identities_follow_a_threshold_changed_through_the_admin_api(server, admin, data_dir):
    """The keeper starts with the service's threshold; one changed later holds for the next sighting."""
    application = admin.create_application("test-unknowns-threshold")
    service = admin.create_service(application["id"], "unknowns-threshold", "recognition")
    people = list(_people(data_dir).values())
    with FaceClient(server.url, api_key=service["api_key"], timeout=60) as client:
        def identity_of(photo) -> int | None:
            return client.recognize(photo, limit=1, remember_unknowns=True)["result"][0]["sighting"]["identity"]

        first, second = identity_of(people[0][0]), identity_of(people[1][0])
        assert None not in (first, second) and first != second  # two people apart at the default threshold
        admin.update_service(service["id"], similarity_threshold=0.0)  # every face alike enough
        assert identity_of(people[2][0]) in (first, second)
        admin.update_service(service["id"], similarity_threshold=1.0)  # no face alike enough
        assert identity_of(people[0][1]) not in (None, first, second)
    admin.delete_application(application["id"])


def test_bad_and_foreign_ids(seen):
    client, other = seen["client"], seen["other"]
    identity = _identity(seen, seen["strangers"][0])
    sighting = seen["sightings"][seen["strangers"][0]][0]["id"]
    assert _status(lambda: client.get_identity(987654321)) == 404
    assert _status(lambda: client.identity_sightings(987654321)) == 404
    assert _status(lambda: client.merge_identities(identity, identity)) == 400
    assert _status(lambda: client.merge_identities(identity, 987654321)) == 404
    assert _status(lambda: client.split_identity(identity, ["not-a-sighting"])) == 404
    everything = [s["id"] for s in client.identity_sightings(identity, size=100)]
    assert _status(lambda: client.split_identity(identity, everything)) == 400
    assert _status(lambda: client.sighting_image("not-a-sighting")) == 404
    for call in (lambda: other.get_identity(identity), lambda: other.identity_sightings(identity),
                 lambda: other.ignore_identity(identity), lambda: other.promote_identity(identity, "thief"),
                 lambda: other.merge_identities(identity, identity + 1), lambda: other.sighting_image(sighting),
                 lambda: other.split_identity(identity, [sighting])):
        assert _status(call) == 404
    assert other.list_identities()["identities"] == []
    assert client.get_identity(identity)["sightings"] >= 1  # untouched


def test_command_line_lists_identities_and_searches_sightings(seen, server, capsys):
    connection = ["--url", server.url, "--api-key", seen["key"], "--json"]
    assert main(["unknowns", "list", "--size", "100", *connection]) == 0
    listed = json.loads(capsys.readouterr().out)
    served = seen["client"].list_identities(size=100)["identities"]
    assert {row["id"] for row in listed} == {row["id"] for row in served}
    name = seen["strangers"][0]
    assert main(["unknowns", "search", str(seen["people"][name][PHOTOS_SEEN]), "--limit", "2", *connection]) == 0
    found = json.loads(capsys.readouterr().out)["result"][0]
    assert {hit["id"] for hit in found} <= {s["id"] for s in seen["sightings"][name]} | {
        s["id"] for s in seen["client"].identity_sightings(_identity(seen, name), size=100)}
    assert main(["unknowns", "show", "987654321", *connection]) == 1
    assert "not found" in capsys.readouterr().err


def test_deleting_the_service_drops_its_sightings_and_keeper(seen, admin):
    import ray

    from actors.identity_keeper import NAMESPACE, keeper_name
    from faceindex.layout import ServiceLayout

    service_id = seen["service_id"]
    admin.delete_service(service_id)
    names = {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)}
    assert keeper_name(service_id) not in names
    assert not {name for name in names if name.startswith(ServiceLayout(service_id, 1, "sightings").actor_prefix())}
    assert _status(lambda: seen["client"].list_identities()) == 401  # its key is gone with it
