"""Face tracking across frames: IoU association, confirmed by embeddings, with a best shot per track.

Each frame is handled in two steps so that embeddings are computed only where they matter (an
embedding costs several times a detection):

1. :meth:`Tracker.plan` matches the frame's observations to live tracks by the IoU of their boxes
   with each track's predicted box (constant velocity), greedily, best IoU first, and lists the
   observations that need an embedding: those that start or re-find a track, those whose match is
   doubtful (low IoU, overlapping two tracks, or a sudden change of appearance: a cheap signature
   of the aligned chip no longer correlates with the track's previous one, as when one person
   replaces another at the same place), those that would become their track's best shot, and
   those of tracks not confirmed for ``confirm_interval_s``.
2. :meth:`Tracker.commit` takes those embeddings. A match whose embedding disagrees with its track
   (cosine below ``same_person_cosine``) is undone; the observation then re-finds another recently
   missed track (cosine at least ``reid_cosine``) or starts a new one. Tracks not seen for
   ``max_age_s`` end.

A track counts once it has ``min_hits`` sightings (a detector's one-frame false positive never
does). Its best shot is its best-quality observation confirmed by an embedding; a new one must beat
the current one by ``best_shot_margin`` (quality jitters from frame to frame, and each candidate
costs an embedding). Times are seconds on the source's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from facecore.detect import box_iou

MAX_PREDICTION_S = 0.5
VELOCITY_SMOOTHING = 0.5
SIGNATURE_SIZE = 16


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds of the tracker (cosines of unit SFace embeddings, IoUs, seconds)."""

    iou_threshold: float = 0.3
    confident_iou: float = 0.5
    same_person_cosine: float = 0.3
    reid_cosine: float = 0.4
    appearance_change: float = 0.7
    confirm_interval_s: float = 1.0
    best_shot_margin: float = 0.02
    max_age_s: float = 1.0
    min_hits: int = 2


@dataclass
class Observation:
    """A face seen in one frame.

    ``signature``: optional unit vector of the face's appearance, cheap to compute (see
    :func:`appearance_signature`); ``payload`` is the caller's (e.g. the frame, for the best-shot crop).
    """

    box: np.ndarray
    score: float
    quality: float
    time: float
    signature: np.ndarray | None = None
    payload: Any = None
    embedding: np.ndarray | None = None


@dataclass
class Track:
    """One face followed over time. ``reference`` is the unit mean of its confirmed embeddings."""

    id: int
    first_seen: float
    last_seen: float
    box: np.ndarray
    hits: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    best: Observation | None = None
    reference: np.ndarray | None = None
    signature: np.ndarray | None = None
    confirmed_until: float = 0.0
    counted: bool = False
    embedding_sum: np.ndarray | None = field(default=None, repr=False)

    def predicted(self, at: float) -> np.ndarray:
        """The box expected at time ``at`` (constant velocity, extrapolated at most 0.5 s)."""
        return self.box + self.velocity * min(max(at - self.last_seen, 0.0), MAX_PREDICTION_S)

    def similarity(self, embedding: np.ndarray) -> float:
        """Cosine of ``embedding`` with the track's reference embedding (1.0 when it has none yet)."""
        return 1.0 if self.reference is None else float(self.reference @ embedding)


@dataclass
class Plan:
    """Step 1's result: IoU matches (observation index -> track) and what needs an embedding."""

    time: float
    observations: list[Observation]
    matches: dict[int, Track]
    to_embed: list[int]


@dataclass
class TrackUpdate:
    """What changed in a step, for counted tracks only.

    ``started``: reached ``min_hits`` in this step; ``improved``: got a new best shot (a track that
    started in this step is not listed again); ``ended``: not seen for ``max_age_s``, or finished.
    """

    started: list[Track] = field(default_factory=list)
    improved: list[Track] = field(default_factory=list)
    ended: list[Track] = field(default_factory=list)


class Tracker:
    """Tracks of one video source. Call :meth:`plan` then :meth:`commit` once per frame."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self.tracks: list[Track] = []
        self._next_id = 1

    def plan(self, observations: list[Observation], time: float) -> Plan:
        cfg = self.config
        matches: dict[int, Track] = {}
        ambiguous: set[int] = set()
        if observations and self.tracks:
            predicted = np.stack([track.predicted(time) for track in self.tracks])
            ious = np.stack([box_iou(obs.box, predicted) for obs in observations])
            candidates = ious >= cfg.iou_threshold
            ambiguous = {int(i) for i in np.nonzero((candidates.sum(axis=1) > 1)
                                                    | (candidates[:, candidates.sum(axis=0) > 1].any(axis=1)))[0]}
            used_tracks: set[int] = set()
            for flat in np.argsort(-ious, axis=None, kind="stable"):
                i, t = divmod(int(flat), len(self.tracks))
                if ious[i, t] < cfg.iou_threshold:
                    break
                if i in matches or t in used_tracks:
                    continue
                matches[i] = self.tracks[t]
                used_tracks.add(t)
                if ious[i, t] < cfg.confident_iou:
                    ambiguous.add(i)
        to_embed = [i for i, obs in enumerate(observations)
                    if i not in matches or i in ambiguous or self._needs_confirmation(matches[i], obs)]
        return Plan(time, observations, matches, to_embed)

    def _needs_confirmation(self, track: Track, obs: Observation) -> bool:
        changed = (obs.signature is not None and track.signature is not None
                   and float(obs.signature @ track.signature) < self.config.appearance_change)
        return (changed or obs.time - track.confirmed_until >= self.config.confirm_interval_s
                or track.best is None or obs.quality > track.best.quality + self.config.best_shot_margin)

    def commit(self, plan: Plan, embeddings: dict[int, np.ndarray]) -> TrackUpdate:
        """Apply the plan with the embeddings of ``plan.to_embed`` (unit vectors, by observation index)."""
        cfg = self.config
        update = TrackUpdate()
        observations = plan.observations
        unmatched: list[int] = [i for i in range(len(observations)) if i not in plan.matches]
        matched: set[int] = set()
        for i, track in plan.matches.items():
            embedding = embeddings.get(i)
            if embedding is not None and track.similarity(embedding) < cfg.same_person_cosine:
                unmatched.append(i)
                continue
            self._extend(track, observations[i], embedding, update)
            matched.add(track.id)

        for i, track in self._reidentify(unmatched, embeddings, matched):
            unmatched.remove(i)
            self._extend(track, observations[i], embeddings[i], update)
            matched.add(track.id)

        for i in sorted(unmatched):
            obs = observations[i]
            track = Track(id=self._next_id, first_seen=obs.time, last_seen=obs.time,
                          box=np.asarray(obs.box, np.float32))
            self._next_id += 1
            self.tracks.append(track)
            self._extend(track, obs, embeddings.get(i), update)

        expired = [t for t in self.tracks if plan.time - t.last_seen > cfg.max_age_s]
        self.tracks = [t for t in self.tracks if t not in expired]
        update.ended = [t for t in expired if t.counted]
        update.improved = [t for t in update.improved if t not in update.started and t not in update.ended]
        return update

    def finish(self) -> TrackUpdate:
        """End every live track (the source ended or dropped)."""
        ended = [t for t in self.tracks if t.counted]
        self.tracks = []
        return TrackUpdate(ended=ended)

    def _reidentify(self, unmatched: list[int], embeddings: dict[int, np.ndarray],
                    matched: set[int]) -> list[tuple[int, Track]]:
        """Unmatched observations that are a live, unmatched track's face (best cosine first)."""
        free = [t for t in self.tracks if t.id not in matched and t.reference is not None]
        pairs = sorted(((free_track.similarity(embeddings[i]), i, n)
                        for i in unmatched if i in embeddings for n, free_track in enumerate(free)),
                       key=lambda item: -item[0])
        chosen: list[tuple[int, Track]] = []
        used_obs: set[int] = set()
        used_tracks: set[int] = set()
        for cosine, i, n in pairs:
            if cosine < self.config.reid_cosine:
                break
            if i in used_obs or n in used_tracks:
                continue
            chosen.append((i, free[n]))
            used_obs.add(i)
            used_tracks.add(n)
        return chosen

    def _extend(self, track: Track, obs: Observation, embedding: np.ndarray | None, update: TrackUpdate) -> None:
        box = np.asarray(obs.box, np.float32)
        dt = obs.time - track.last_seen
        if track.hits and dt > 0:
            velocity = (box - track.box) / dt
            track.velocity = VELOCITY_SMOOTHING * track.velocity + (1 - VELOCITY_SMOOTHING) * velocity
        track.box = box
        track.last_seen = max(track.last_seen, obs.time)
        track.hits += 1
        if obs.signature is not None:
            track.signature = obs.signature
        if embedding is not None:
            obs.embedding = embedding
            track.embedding_sum = embedding.copy() if track.embedding_sum is None else track.embedding_sum + embedding
            track.reference = track.embedding_sum / max(float(np.linalg.norm(track.embedding_sum)), 1e-12)
            track.confirmed_until = obs.time
            if track.best is None or obs.quality > track.best.quality + self.config.best_shot_margin:
                track.best = obs
                if track.counted:
                    update.improved.append(track)
        if not track.counted and track.hits >= self.config.min_hits:
            track.counted = True
            update.started.append(track)


def appearance_signature(chip: np.ndarray, size: int = SIGNATURE_SIZE) -> np.ndarray:
    """A unit vector of the aligned chip's coarse grey-level pattern (zero mean, ``size`` x ``size``).

    Consecutive sightings of one face correlate above 0.85; another face at the same place, near 0.
    """
    grey = cv2.cvtColor(chip, cv2.COLOR_BGR2GRAY) if chip.ndim == 3 else chip
    small = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    return small / max(float(np.linalg.norm(small)), 1e-6)
