"""Tracking, event policy, frame sampling and stream settings checks: pure logic, no Ray, no models."""

from __future__ import annotations

import numpy as np
import pytest

from facevideo.config import ProcessingOptions, check_roi, check_source_url
from facevideo.events import APPEARED, BETTER_SHOT, ENDED, EventPolicy
from facevideo.source import FrameSampler
from facevideo.tracking import Observation, Tracker, TrackerConfig, TrackUpdate, appearance_signature
from facevideo.webhooks import sign, verify_signature

FPS = 10.0


def unit(seed: int, dim: int = 128) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def near(vector: np.ndarray, seed: int, noise: float = 0.3) -> np.ndarray:
    """Another sighting of the same face: cosine with ``vector`` around 0.95."""
    other = vector + noise * unit(seed, len(vector)) / np.sqrt(2)
    return other / np.linalg.norm(other)


def signature(seed: int) -> np.ndarray:
    return unit(seed, 64)


class Scene:
    """Drives a tracker with faces (identity -> box, quality); embeddings come from identities."""

    def __init__(self, config: TrackerConfig | None = None):
        self.tracker = Tracker(config)
        self.identities = {name: unit(i + 1) for i, name in enumerate("ABCDEF")}
        self.embedded = 0
        self.frame = 0

    def step(self, faces: dict[str, tuple[list[float], float]]) -> TrackUpdate:
        t = self.frame / FPS
        names = list(faces)
        observations = [Observation(box=np.array(box, np.float32), score=0.9, quality=quality, time=t,
                                    signature=signature(ord(name)))
                        for name, (box, quality) in faces.items()]
        plan = self.tracker.plan(observations, t)
        self.embedded += len(plan.to_embed)
        embeddings = {i: near(self.identities[names[i]], 1000 + self.frame * 10 + i) for i in plan.to_embed}
        self.frame += 1
        return self.tracker.commit(plan, embeddings)

    def owner(self, name: str) -> int:
        """Id of the live track whose reference embedding is ``name``'s."""
        return max(self.tracker.tracks, key=lambda t: float(t.reference @ self.identities[name])).id


def box_at(x: float, y: float = 100, size: float = 80) -> list[float]:
    return [x, y, x + size, y + size]


def test_a_moving_face_is_one_track_with_its_best_shot_and_few_embeddings():
    scene = Scene()
    updates = [scene.step({"A": (box_at(100 + 4 * i, size=80 + i), 0.5 + 0.01 * (i % 7))}) for i in range(30)]
    started = [t.id for u in updates for t in u.started]
    assert started == [1]
    assert not any(u.ended for u in updates)
    assert len(scene.tracker.tracks) == 1 and scene.tracker.tracks[0].hits == 30
    # best shot: the highest quality seen (0.56, first at frame 6), confirmed by an embedding
    assert scene.tracker.tracks[0].best.quality == pytest.approx(0.56)
    assert scene.tracker.tracks[0].best.embedding is not None
    assert scene.embedded <= 12, "a steady track is embedded only now and then"
    for _ in range(int(FPS * 1.2)):
        update = scene.step({})
        if update.ended:
            break
    assert [t.id for t in update.ended] == [1]
    assert update.ended[0].first_seen == 0.0 and update.ended[0].last_seen == pytest.approx(2.9)


def test_one_frame_false_positive_never_counts():
    scene = Scene()
    scene.step({"A": (box_at(100), 0.5)})
    updates = [scene.step({}) for _ in range(15)]
    assert not any(u.started or u.ended for u in updates)
    assert scene.tracker.tracks == []


def test_another_person_at_the_same_place_is_a_new_track_at_once():
    scene = Scene()
    for i in range(10):
        scene.step({"A": (box_at(100 + i), 0.8)})
    update = scene.step({"B": (box_at(110), 0.3)})  # same box, lower quality: only its appearance changed
    assert [t.id for t in update.started] == [] and len(scene.tracker.tracks) == 2
    first = next(t for t in scene.tracker.tracks if t.id == 1)
    assert first.last_seen == pytest.approx(0.9), "A's track was not extended by B's sighting"
    second = next(t for t in scene.tracker.tracks if t.id == 2)
    assert second.first_seen == pytest.approx(1.0)


def test_without_signatures_a_swap_is_caught_by_the_periodic_confirmation():
    tracker = Tracker(TrackerConfig(confirm_interval_s=0.3))
    a, b = unit(1), unit(2)
    split_at = None
    for frame in range(20):
        t = frame / FPS
        identity = a if frame < 10 else b
        plan = tracker.plan([Observation(box=np.array(box_at(100), np.float32), score=0.9, quality=0.5, time=t)], t)
        tracker.commit(plan, {i: near(identity, frame) for i in plan.to_embed})
        if split_at is None and len(tracker.tracks) == 2:
            split_at = t
    assert split_at is not None and split_at <= 1.0 + 0.3 + 1e-6


def test_crossing_faces_keep_their_identities():
    scene = Scene()
    owners = []
    for i in range(21):
        # A moves right, B moves left; they overlap around frame 10
        scene.step({"A": (box_at(100 + 10 * i), 0.6), "B": (box_at(300 - 10 * i), 0.6)})
        if i in (3, 18):
            owners.append((scene.owner("A"), scene.owner("B")))
    assert owners[0] == owners[1]
    assert len({t.id for t in scene.tracker.tracks}) == 2


def test_a_face_missed_for_a_few_frames_continues_its_track_even_after_moving():
    scene = Scene()
    for i in range(5):
        scene.step({"A": (box_at(100), 0.6)})
    for _ in range(4):
        scene.step({})
    update = scene.step({"A": (box_at(400), 0.6)})  # far away: only the embedding can re-find it
    assert not update.started and len(scene.tracker.tracks) == 1 and scene.tracker.tracks[0].hits == 6


def test_two_people_at_once_are_two_tracks():
    scene = Scene()
    for i in range(5):
        update = scene.step({"A": (box_at(50 + i), 0.6), "B": (box_at(400 - i), 0.7)})
        if i == 1:
            assert sorted(t.id for t in update.started) == [1, 2]
    assert len(scene.tracker.tracks) == 2
    assert {t.id for t in scene.tracker.finish().ended} == {1, 2}


def test_realtime_mode_emits_on_start_and_on_a_clearly_better_shot_only():
    scene = Scene()
    policy = EventPolicy("realtime", better_shot_gain=0.1)
    emitted = []
    for quality in [0.50, 0.52, 0.55, 0.58, 0.61, 0.62, 0.70, 0.73, 0.40]:
        emitted += [(t.id, reason, round(t.best.quality, 2)) for t, reason in
                    policy.decide(scene.step({"A": (box_at(100), quality)}))]
    emitted += [(t.id, reason) for t, reason in policy.decide(scene.tracker.finish())]
    # 0.52 is not a new best shot (it must beat 0.50 by the 0.02 margin); 0.61 is 0.11 better than 0.50,
    # 0.70 only 0.09 better than 0.61, 0.73 0.12 better
    assert emitted == [(1, APPEARED, 0.50), (1, BETTER_SHOT, 0.61), (1, BETTER_SHOT, 0.73)]


def test_overall_mode_emits_once_per_track_with_its_best_shot():
    scene = Scene()
    policy = EventPolicy("overall")
    emitted = []
    for quality in [0.5, 0.9, 0.6]:
        emitted += policy.decide(scene.step({"A": (box_at(100), quality), "B": (box_at(300), 0.4)}))
    assert emitted == []
    emitted = policy.decide(scene.tracker.finish())
    assert sorted((t.id, reason, t.best.quality) for t, reason in emitted) == [(1, ENDED, 0.9), (2, ENDED, 0.4)]


def test_appearance_signature_tells_faces_apart():
    rng = np.random.default_rng(0)
    face = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    brighter = np.clip(face.astype(int) + 20, 0, 255).astype(np.uint8)
    other = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    assert float(appearance_signature(face) @ appearance_signature(brighter)) > 0.99
    assert float(appearance_signature(face) @ appearance_signature(other)) < 0.5


def test_frame_sampler_keeps_the_configured_rate():
    times = [i / 25 for i in range(100)]  # 4 s at 25 fps
    sampler = FrameSampler(5.0)
    kept = [t for t in times if sampler.keep(t)]
    assert len(kept) == 20 and kept[:3] == pytest.approx([0.0, 0.2, 0.4])
    every = FrameSampler(0.0)
    assert all(every.keep(t) for t in times)
    gap = FrameSampler(5.0)
    assert [gap.keep(t) for t in (0.0, 0.1, 3.0, 3.1, 3.2)] == [True, False, True, False, True]


@pytest.mark.parametrize("url", ["ftp://host/x.mp4", "relative/path.mp4", "javascript:alert(1)", "", "http://",
                                 "file://relative"])
def test_bad_sources_are_refused(url):
    with pytest.raises(ValueError):
        check_source_url(url)


@pytest.mark.parametrize("url", ["/data/a.mp4", "rtsp://cam/1", "http://cam/mjpg", "https://h/x.m3u8", "file:///a.mp4"])
def test_good_sources_pass(url):
    assert check_source_url(url) == url


@pytest.mark.parametrize("roi", [[0.5, 0.5, 0.4, 0.9], [0, 0, 1.2, 1], [0, 0, 1], ["a", 0, 1, 1], [-0.1, 0, 1, 1]])
def test_bad_roi_is_refused(roi):
    with pytest.raises(ValueError):
        check_roi(roi)


def test_processing_options_are_checked():
    with pytest.raises(ValueError, match="mode"):
        ProcessingOptions(mode="sometimes")
    with pytest.raises(ValueError, match="max_fps"):
        ProcessingOptions(max_fps=-1)


def test_webhook_signature_round_trip():
    body = b'{"id": 1}'
    signature_value = sign("s3cret", "1700000000", body)
    assert signature_value.startswith("sha256=")
    assert verify_signature("s3cret", "1700000000", body, signature_value, now=1700000000)
    assert not verify_signature("other", "1700000000", body, signature_value, now=1700000000)
    assert not verify_signature("s3cret", "1700000001", body, signature_value, now=1700000000)
