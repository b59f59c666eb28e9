"""Offline clustering of faces: the average-linkage algorithm, its scores, and ``faces cluster`` on
real photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facecore.cluster_scores import cluster_scores
from facecore.face_clusters import agglomerate
from faces_cli import cluster_command
from faces_cli.main import main

SEVERAL = ["Abel_Pacheco", "Angelina_Jolie", "Bill_Clinton", "Catherine_Zeta-Jones", "Jason_Alexander",
           "Tyra_Banks"]
SINGLE = ["Anthony_Pico", "David_Brent", "John_Elway"]


@pytest.fixture(autouse=True)
def model_cache(monkeypatch, models_dir):
    monkeypatch.setenv("FACES_DATA_DIR", str(models_dir.parent))


def brute_force_average_linkage(vectors: np.ndarray, threshold: float) -> list[set[int]]:
    clusters = [{item} for item in range(len(vectors))]
    similarity = vectors @ vectors.T
    while len(clusters) > 1:
        best, pair = -np.inf, None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                value = similarity[np.ix_(sorted(clusters[a]), sorted(clusters[b]))].mean()
                if value > best:
                    best, pair = value, (a, b)
        if best < threshold:
            break
        a, b = pair
        clusters[a] |= clusters.pop(b)
    return clusters


def partition(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == label).tolist()) for label in set(labels.tolist())}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_chain_algorithm_gives_exactly_the_greedy_average_linkage(seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, 16))
    vectors = np.repeat(centres, 5, axis=0) + 0.9 * rng.standard_normal((30, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = agglomerate(vectors, 0.4)
    assert partition(labels) == {frozenset(c) for c in brute_force_average_linkage(vectors, 0.4)}
    sizes = np.bincount(labels)
    assert list(sizes) == sorted(sizes, reverse=True) and 1 < len(sizes) < 30


def test_cluster_scores_against_hand_counts():
    # clusters {a1 a2 b1} {b2}: pairs predicted 3, true 2 (a1a2, b1b2), together 1
    scores = cluster_scores([0, 0, 0, 1], ["a", "a", "b", "b"])
    assert scores.pairwise_precision == pytest.approx(1 / 3) and scores.pairwise_recall == pytest.approx(1 / 2)
    assert scores.pairwise_f1 == pytest.approx(0.4)
    assert scores.bcubed_precision == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1) / 4)
    assert scores.bcubed_recall == pytest.approx((1 + 1 + 1 / 2 + 1 / 2) / 4)
    assert cluster_scores([0, 1], ["a", "b"]).pairwise_f1 == 1.0


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, data_dir) -> Path:
    """Photos of several people, mixed in one tree, with a file that is no image and a broken JPEG."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "nested").mkdir()
    for number, person in enumerate(SEVERAL + SINGLE):
        for image in sorted((data_dir / "lfw-dev" / person).glob("*.jpg")):
            target = folder / ("nested" if number % 2 else ".") / image.name
            target.symlink_to(image)
    (folder / "notes.txt").write_text("not a photo")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


def person_of(face: dict) -> str:
    return Path(face["image"]).name.rsplit("_", 1)[0]


def test_faces_cluster_groups_a_folder_of_photos_by_person(capsys, photo_folder, tmp_path):
    out = tmp_path / "clusters.json"
    assert main(["cluster", str(photo_folder), "--largest", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert [Path(error["image"]).name for error in printed["errors"]] == ["broken.jpg"]
    clusters = [{person_of(face) for face in members} for members in printed["clusters"]]
    assert all(len(people) == 1 for people in clusters), clusters  # nobody merged with anybody else
    for person in SEVERAL:  # each person with several photos is one cluster
        assert sum(person in people for people in clusters) == 1, person
    photos = sum(len(list(photo_folder.rglob(f"{person}_*.jpg"))) for person in SEVERAL + SINGLE)
    assert printed["images"] == photos + 1 and printed["faces"] == photos == sum(map(len, printed["clusters"]))

    assert main(["cluster", str(photo_folder)]) == 0  # every face, as text
    text = capsys.readouterr().out
    assert text.startswith("cluster 1: ") and "broken.jpg: error:" in text
    assert f"{photos + 1} image(s), " in text and "cluster(s) of several faces" in text


def test_faces_cluster_refuses_more_faces_than_one_run_holds(capsys, monkeypatch, photo_folder):
    monkeypatch.setattr(cluster_command, "MAX_FACES", 5)
    assert main(["cluster", str(photo_folder), "--largest"]) == 2
    assert "more than the 5 one run clusters" in capsys.readouterr().err


def test_faces_cluster_refuses_bad_input(capsys, tmp_path):
    assert main(["cluster", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["cluster", str(tmp_path)]) == 2
    assert "no image" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main(["cluster", str(tmp_path), "--threshold", "1.5"])
    assert refused.value.code == 2 and "a similarity between 0 and 1" in capsys.readouterr().err
