"""A service's embedding model, chosen at its creation: a fusion service and an SFace service side by
side on one platform, over real HTTP; the embedder serves both, batching each model's faces apart."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from facecore.embed import FUSION, SFACE, model_id
from faceindex.layout import ServiceLayout
from serve_app.client import FaceApiError, FaceClient

PEOPLE = 20


def _people(data_dir):
    return sorted(folder for folder in (data_dir / "lfw-dev").iterdir()
                  if folder.is_dir() and len(list(folder.glob("*.jpg"))) >= 2)[:PEOPLE]


def _best(api: FaceClient, photo) -> tuple[str, float, bool]:
    face = api.recognize(photo, limit=1, prediction_count=1)["result"][0]
    best = face["subjects"][0] if face["subjects"] else {"subject": None, "similarity": 0.0}
    return best["subject"], best["similarity"], face["unknown"]


@pytest.fixture(scope="module")
def services(server, admin, data_dir):
    """A fusion and an SFace recognition service, each with the first photo of 20 lfw-dev people, then
    asked (interleaved, concurrently) who the second photos are."""
    app = admin.create_application("service-models")
    made = {model: admin.create_service(app["id"], f"{model}-people", "recognition", model=model)
            for model in ("fusion", "sface")}
    clients = {model: FaceClient(server.url, api_key=service["api_key"]) for model, service in made.items()}
    people = _people(data_dir)
    for person in people:
        for api in clients.values():
            api.add_face(sorted(person.glob("*.jpg"))[0], subject=person.name)
    asks = [(model, person) for person in people for model in clients]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda ask: _best(clients[ask[0]], sorted(ask[1].glob("*.jpg"))[1]), asks))
    found = {model: {} for model in clients}
    for (model, person), answer in zip(asks, answers):
        found[model][person.name] = answer
    yield {"app": app, "services": made, "clients": clients, "found": found, "people": people}
    for api in clients.values():
        api.close()
    admin.delete_application(app["id"])


def test_service_json_names_its_model(admin, services):
    made = services["services"]
    assert made["fusion"]["model"] == "fusion" and made["sface"]["model"] == "sface"
    listed = {service["name"]: service["model"] for service in admin.list_services(services["app"]["id"])}
    assert listed == {"fusion-people": "fusion", "sface-people": "sface"}
    default = admin.create_service(services["app"]["id"], "default-model", "detection")
    assert default["model"] == "sface"


def test_unknown_model_is_a_400_naming_the_known_ones(admin, services):
    with pytest.raises(FaceApiError) as raised:
        admin.create_service(services["app"]["id"], "bad-model", "recognition", model="arcface")
    assert raised.value.status == 400
    assert all(name in raised.value.message for name in ("sface", "dlib-resnet", "fusion"))


@pytest.mark.parametrize("model", ["fusion", "sface"])
def test_each_service_recognizes_every_person_at_rank_1(services, model):
    """Rank-1 and above the default recognition threshold (each model's calibrated similarity)."""
    found = services["found"][model]
    wrong = {person: answer for person, answer in found.items() if answer[0] != person or answer[2]}
    assert not wrong, f"{model}: {wrong}"


def test_faces_are_stored_and_searched_with_the_service_model(server, services):
    """Embeddings of each service's own dimension: 256 numbers for fusion, 128 for SFace; each is
    refused by the other service; a stored face carries its model."""
    fusion, sface = services["clients"]["fusion"], services["clients"]["sface"]
    assert FUSION.embedding_dim == 256 and SFACE.embedding_dim == 128
    with pytest.raises(FaceApiError) as raised:
        fusion.recognize_embeddings([[0.1] * SFACE.embedding_dim])
    assert raised.value.status == 400 and "256" in raised.value.message
    assert fusion.recognize_embeddings([[0.1] * FUSION.embedding_dim])["result"][0]["similarities"] is not None
    with pytest.raises(FaceApiError):
        sface.recognize_embeddings([[0.1] * FUSION.embedding_dim])
    status = fusion.recognize(sorted(services["people"][0].glob("*.jpg"))[1], status=True,
                              face_plugins="calculator")
    assert len(status["result"][0]["embedding"]) == FUSION.embedding_dim
    assert status["plugins_versions"]["calculator"] == model_id("fusion")
    service = services["services"]["fusion"]
    table = ServiceLayout(service["id"], service["shards"], model="fusion").open_table(
        server.settings.faces_uri, 0, FUSION.embedding_dim)
    assert table.count() == PEOPLE
    models = {model for batch in table.batches(["model"]) for model in batch.column("model").to_pylist()}
    assert models == {model_id("fusion")}
