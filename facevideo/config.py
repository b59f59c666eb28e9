"""What a video stream is configured with, and the checks every entry point applies to it.

The checks raise :class:`ValueError` with a message a user can act on; the HTTP API turns them into
400 responses, the CLI prints them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlsplit

from outbound import redact

MODES = ("realtime", "overall")
SOURCE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "srt", "file")
MAX_FPS = 60.0
MAX_FACE_SIZE = 4096


def check_source_url(url: str) -> str:
    """An absolute file path or a URL with one of :data:`SOURCE_SCHEMES`; returned stripped.

    Only the form is checked here; who may open it is the outbound policy's question
    (:meth:`outbound.OutboundPolicy.check`, with these schemes).
    """
    value = (url or "").strip()
    shown = redact(value)
    if not value:
        raise ValueError("the source URL must not be empty")
    if value.startswith("/"):
        return value
    parts = urlsplit(value)
    if not parts.scheme:
        raise ValueError(f"the source {shown!r} is neither an absolute file path nor a URL")
    if parts.scheme.lower() not in SOURCE_SCHEMES:
        raise ValueError(f"unsupported source URL scheme {parts.scheme!r}: use an absolute file path or one of "
                         f"{', '.join(s + '://' for s in SOURCE_SCHEMES)}")
    if parts.scheme.lower() == "file":
        if not parts.path.startswith("/"):
            raise ValueError(f"a file:// source needs an absolute path, not {shown!r}")
    elif not parts.netloc:
        raise ValueError(f"the source URL {shown!r} has no host")
    return value


def is_file_source(url: str) -> bool:
    """Whether the source is a local file (played at its own pace, finished at its end)."""
    return url.startswith("/") or url.lower().startswith("file:")


def file_path(url: str) -> str:
    """The local path of a file source (``file:///x`` or ``/x``)."""
    return urlsplit(url).path if url.lower().startswith("file:") else url


def check_max_fps(value: float) -> float:
    """Detections per second, 0 meaning every frame, at most :data:`MAX_FPS`."""
    fps = float(value)
    if not math.isfinite(fps) or fps < 0 or fps > MAX_FPS:
        raise ValueError(f"max_fps must be between 0 (every frame) and {MAX_FPS:g}, not {value}")
    return fps


def check_min_face_size(value: int) -> int:
    if isinstance(value, bool) or int(value) != value or not 0 <= int(value) <= MAX_FACE_SIZE:
        raise ValueError(f"min_face_size must be an integer number of pixels from 0 to {MAX_FACE_SIZE}, not {value}")
    return int(value)


def check_roi(roi) -> tuple[float, float, float, float] | None:
    """A region of interest ``[x1, y1, x2, y2]`` in fractions of the frame (0..1), or None for all of it."""
    if roi is None:
        return None
    try:
        values = tuple(float(v) for v in roi)
    except (TypeError, ValueError):
        raise ValueError(f"roi must be four numbers [x1, y1, x2, y2] in fractions of the frame, not {roi!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"roi must be four numbers [x1, y1, x2, y2] in fractions of the frame, not {roi!r}")
    x1, y1, x2, y2 = values
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise ValueError(f"roi must satisfy 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 (fractions of the frame), "
                         f"not {list(values)}")
    return values


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    return mode


@dataclass(frozen=True)
class ProcessingOptions:
    """How the frames of one stream are turned into events.

    ``recognition_threshold`` is the calibrated similarity below which a face is "unknown";
    ``save_frame`` keeps the full frame of each event's best shot next to its crop.
    """

    mode: str = "realtime"
    max_fps: float = 5.0
    min_face_size: int = 30
    roi: tuple[float, float, float, float] | None = None
    det_prob_threshold: float = 0.8
    recognition_threshold: float = 0.95
    save_frame: bool = False

    def __post_init__(self) -> None:
        check_mode(self.mode)
        check_max_fps(self.max_fps)
        check_min_face_size(self.min_face_size)
        check_roi(self.roi)
