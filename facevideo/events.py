"""When a track becomes an event (FindFace's two modes), and what an event holds.

- ``realtime``: an event when a track starts (reaches the tracker's ``min_hits``) and another each
  time its best shot becomes clearly better than the last one sent (quality up by at least
  :data:`BETTER_SHOT_GAIN`). Fast alerts, several events per track.
- ``overall``: one event per track, with its best shot, when the track ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facevideo.config import check_mode
from facevideo.tracking import Track, TrackUpdate

BETTER_SHOT_GAIN = 0.1

APPEARED = "appeared"
BETTER_SHOT = "better_shot"
ENDED = "ended"
REASONS = (APPEARED, BETTER_SHOT, ENDED)


@dataclass
class VideoEvent:
    """One event of a stream, before it is stored.

    Times are seconds on the source's clock (``first_seen``/``last_seen``); ``box`` is
    ``(x1, y1, x2, y2)`` of the best shot in frame pixels; ``crop`` its JPEG (the face with a margin)
    and ``frame`` the whole frame's JPEG when the stream keeps frames. ``subject`` is None for an
    unknown face (``similarity`` then None as well).
    """

    track_id: str
    reason: str
    first_seen: float
    last_seen: float
    box: tuple[float, float, float, float]
    quality: float
    detection_score: float
    embedding: np.ndarray
    crop: bytes
    frame: bytes | None
    subject: str | None
    similarity: float | None

    @property
    def unknown(self) -> bool:
        return self.subject is None


class EventPolicy:
    """Decides, per tracker step, which tracks become events and why."""

    def __init__(self, mode: str, better_shot_gain: float = BETTER_SHOT_GAIN):
        self.mode = check_mode(mode)
        self.better_shot_gain = better_shot_gain
        self._sent_quality: dict[int, float] = {}

    def decide(self, update: TrackUpdate) -> list[tuple[Track, str]]:
        """``(track, reason)`` pairs to emit, in order."""
        if self.mode == "overall":
            return [(track, ENDED) for track in update.ended if track.best is not None]
        emits: list[tuple[Track, str]] = []
        for track in update.started:
            if track.best is not None:
                emits.append((track, APPEARED))
                self._sent_quality[track.id] = track.best.quality
        for track in update.improved:
            sent = self._sent_quality.get(track.id)
            if sent is not None and track.best.quality >= sent + self.better_shot_gain:
                emits.append((track, BETTER_SHOT))
                self._sent_quality[track.id] = track.best.quality
        for track in update.ended:
            self._sent_quality.pop(track.id, None)
        return emits
