"""Unknown faces grouped online into identities, on real faces: lfw-dev photos fed as sightings."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from facecore.cluster_scores import cluster_scores
from facecore.identities import UNASSIGNED, OnlineIdentities
from facecore.similarity import DEFAULT_RECOGNITION_THRESHOLD, cosine_from_similarity

THRESHOLD = cosine_from_similarity(DEFAULT_RECOGNITION_THRESHOLD)
SEED_QUALITY = 0.5
ENROLLED = 20  # people known to the service: their first photo enrolled


def labels_for_scoring(identities: np.ndarray) -> list[int]:
    """Unassigned sightings count as clusters of their own."""
    return [int(i) if i != UNASSIGNED else -1 - n for n, i in enumerate(identities)]


def test_sightings_of_strangers_become_one_identity_per_person_and_keep_their_ids(lfw_faces):
    vectors, people, qualities = lfw_faces
    with_several = [p for p in dict.fromkeys(people) if (people == p).sum() >= 3]
    known = {p: vectors[np.flatnonzero(people == p)[0]] for p in with_several[:ENROLLED]}
    enrolled_rows = {np.flatnonzero(people == p)[0] for p in known}
    gallery, names = np.stack(list(known.values())), list(known)
    order = [row for row in np.random.default_rng(7).permutation(len(vectors)) if row not in enrolled_rows]

    online = OnlineIdentities(vectors.shape[1], THRESHOLD, SEED_QUALITY)
    matched, unknown_rows, assigned = {}, [], []
    for row in order:  # as a service would: a known subject first, else an identity of unknowns
        scores = gallery @ vectors[row]
        if scores.max() >= THRESHOLD:
            matched[row] = names[int(scores.argmax())]
            continue
        unknown_rows.append(row)
        assigned.append(online.assign(vectors[row], qualities[row]))
    assigned = np.array(assigned)

    strangers = [row for row in unknown_rows if people[row] not in known]
    assert len(strangers) > 300
    # Strangers stay apart from known subjects: only the 1:N threshold's own false matches (with one
    # enrolled photo, two photos of Jack Straw pass for David Stern at cosine 0.43 and 0.47) are taken
    # for a subject, and no sighting matched to a subject enters an identity of unknowns.
    taken = [row for row in matched if people[row] not in known]
    assert len(taken) <= 0.01 * len(strangers)
    assert all(matched[row] == people[row] for row in matched if row not in taken)
    online_scores = cluster_scores(labels_for_scoring(assigned), people[unknown_rows].tolist())
    assert online_scores.pairwise_precision >= 0.95 and online_scores.pairwise_recall >= 0.95

    before = defaultdict(set)
    for row, identity in zip(unknown_rows, assigned):
        before[int(identity)].add(row)
    after_ids = online.recluster(vectors[unknown_rows], qualities[unknown_rows], assigned)
    after = defaultdict(set)
    for row, identity in zip(unknown_rows, after_ids):
        after[int(identity)].add(row)

    scores = cluster_scores(labels_for_scoring(after_ids), people[unknown_rows].tolist())
    assert scores.pairwise_precision == 1.0 and scores.pairwise_f1 >= 0.95
    people_of = {identity: {people[row] for row in rows} for identity, rows in after.items()}
    several = [p for p in set(people[strangers]) if (people[strangers] == p).sum() >= 2]
    whole = [p for p in several if sum(p in found for found in people_of.values()) == 1]
    assert len(whole) >= 0.95 * len(several)
    # ids are stable: an identity whose sightings are unchanged keeps its id, most ids survive,
    # and new identities get ids never used before
    assert all(identity in after and after[identity] == rows for identity, rows in before.items()
               if rows in list(after.values()))
    assert len(set(after) & set(before)) >= 0.95 * len(before)
    assert all(identity > max(before) for identity in set(after) - set(before))
    assert len(online) == len(after)


def test_poor_shots_join_identities_but_do_not_seed_them(lfw_faces):
    vectors, people, qualities = lfw_faces
    person = next(p for p in dict.fromkeys(people) if (people == p).sum() >= 4)
    rows = np.flatnonzero(people == person)
    gate = float(qualities[rows].max()) + 0.01  # every photo of this person is a "poor" shot here
    online = OnlineIdentities(vectors.shape[1], THRESHOLD, gate)
    assert online.assign(vectors[rows[0]], qualities[rows[0]]) == UNASSIGNED and len(online) == 0
    online.min_quality = SEED_QUALITY
    seeded = online.assign(vectors[rows[0]], qualities[rows[0]])
    online.min_quality = gate
    assert [online.assign(vectors[row], qualities[row]) for row in rows[1:]] == [seeded] * (len(rows) - 1)
    assert online.count(seeded) == len(rows)


def test_merge_split_ignore_and_remove(lfw_faces):
    vectors, people, qualities = lfw_faces
    first, second = [p for p in dict.fromkeys(people) if (people == p).sum() >= 4][:2]
    a_rows, b_rows = np.flatnonzero(people == first), np.flatnonzero(people == second)
    online = OnlineIdentities(vectors.shape[1], THRESHOLD, SEED_QUALITY)
    a = {online.assign(vectors[row], qualities[row]) for row in a_rows}
    b = {online.assign(vectors[row], qualities[row]) for row in b_rows}
    assert len(a) == len(b) == 1 and a != b
    a, b = a.pop(), b.pop()

    with pytest.raises(ValueError):
        online.merge(a, a)
    with pytest.raises(KeyError):
        online.merge(a, 999)
    online.merge(a, b)
    assert online.ids() == [a] and online.count(a) == len(a_rows) + len(b_rows)
    with pytest.raises(KeyError):
        online.count(b)

    split_off = online.split(a, vectors[b_rows])  # the second person out again, under a new id
    assert split_off not in (a, b) and online.count(a) == len(a_rows) and online.count(split_off) == len(b_rows)
    assert online.best_match(vectors[b_rows[0]])[0] == split_off
    with pytest.raises(ValueError):
        online.split(a, vectors[a_rows])  # all of its sightings: that is no split

    online.ignore(split_off)
    assert online.assign(vectors[b_rows[1]], qualities[b_rows[1]]) == split_off  # still absorbs its sightings
    every = np.concatenate([a_rows, b_rows, [b_rows[1]]])
    previous = np.array([a] * len(a_rows) + [split_off] * (len(b_rows) + 1))
    assert set(online.recluster(vectors[every], qualities[every], previous)) == {a, split_off}
    assert online.ignored == {split_off}

    online.remove(split_off)
    assert online.ids() == [a] and online.ignored == set()
    assert online.best_match(vectors[b_rows[0]])[1] < THRESHOLD
