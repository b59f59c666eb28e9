"""Synthetic videos of still face photos moving on a background, for tests, benchmarks and demos.

Each :class:`Appearance` pastes one photo (e.g. an LFW still), feathered by an elliptical mask,
from ``start`` to ``end`` seconds, drifting and growing linearly. :func:`render` draws one frame;
:func:`write_video` encodes a whole clip with PyAV.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np


@dataclass(frozen=True)
class Appearance:
    """A photo on screen from ``start`` to ``end`` s, centred at ``centre`` (fractions of the frame),
    ``height`` pixels tall at ``start`` and ``height * grow`` at ``end``, moving ``drift`` px/s."""

    photo: np.ndarray
    start: float
    end: float
    centre: tuple[float, float]
    height: float
    grow: float = 1.0
    drift: tuple[float, float] = (0.0, 0.0)


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A static textured background (a colour gradient with smoothed noise), BGR uint8."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([80 + 60 * xs / width, 90 + 40 * ys / height, 110 + 30 * (xs + ys) / (width + height)], axis=2)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (height, width, 3)).astype(np.float32), (0, 0), 3)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _paste(canvas: np.ndarray, photo: np.ndarray, cx: float, cy: float, height: float) -> None:
    scale = height / photo.shape[0]
    size = (max(2, int(round(photo.shape[1] * scale))), max(2, int(round(photo.shape[0] * scale))))
    resized = cv2.resize(photo, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    w, h = size
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (w // 2, h // 2), (int(w * 0.42), int(h * 0.48)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, w * 0.04))[:, :, None]
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(canvas.shape[1], x0 + w), min(canvas.shape[0], y0 + h)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    part = resized[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0].astype(np.float32)
    alpha = mask[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    region = canvas[fy0:fy1, fx0:fx1].astype(np.float32)
    canvas[fy0:fy1, fx0:fx1] = np.clip(alpha * part + (1 - alpha) * region, 0, 255).astype(np.uint8)


def render(base: np.ndarray, appearances: Sequence[Appearance], t: float) -> np.ndarray:
    """The frame at time ``t``: ``base`` with every appearance on screen at ``t``."""
    frame = base.copy()
    height, width = frame.shape[:2]
    for item in appearances:
        if not item.start <= t < item.end:
            continue
        progress = (t - item.start) / max(item.end - item.start, 1e-9)
        elapsed = t - item.start
        cx = item.centre[0] * width + item.drift[0] * elapsed
        cy = item.centre[1] * height + item.drift[1] * elapsed
        _paste(frame, item.photo, cx, cy, item.height * (1 + (item.grow - 1) * progress))
    return frame


def frames(appearances: Sequence[Appearance], duration: float, size: tuple[int, int], fps: float,
           seed: int = 0) -> Iterator[np.ndarray]:
    """The clip's frames, ``duration * fps`` of them, each ``size`` = (width, height)."""
    base = background(size[0], size[1], seed)
    for index in range(int(round(duration * fps))):
        yield render(base, appearances, index / fps)


def write_video(path: str | Path, appearances: Sequence[Appearance], duration: float,
                size: tuple[int, int] = (640, 360), fps: int = 10, codec: str = "libx264", seed: int = 0) -> Path:
    """Encode the clip to ``path`` (H.264 in MP4 by default) and return the path."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "20"}
        for image in frames(appearances, duration, size, fps, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
