"""Request bodies of the video API, checked with :mod:`facevideo.config` (a bad value is a 400)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facevideo.config import check_max_fps, check_min_face_size, check_mode, check_roi, check_source_url
from facevideo.webhooks import WEBHOOK_SCHEMES
from serve_app.validation import Name, RowId, Text


def check_webhook_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in WEBHOOK_SCHEMES or not parts.netloc:
        raise ValueError("webhook_url must be an http:// or https:// URL")
    return url.strip()


class _StreamFields(BaseModel):
    """Validators shared by creation and update."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("source_url", check_fields=False)
    @classmethod
    def _source(cls, value):
        return None if value is None else check_source_url(value)

    @field_validator("max_fps", check_fields=False)
    @classmethod
    def _fps(cls, value):
        return None if value is None else check_max_fps(value)

    @field_validator("min_face_size", check_fields=False)
    @classmethod
    def _min_face(cls, value):
        return None if value is None else check_min_face_size(value)

    @field_validator("roi", check_fields=False)
    @classmethod
    def _roi(cls, value):
        return None if value is None else list(check_roi(value))

    @field_validator("mode", check_fields=False)
    @classmethod
    def _mode(cls, value):
        return None if value is None else check_mode(value)

    @field_validator("webhook_url", check_fields=False)
    @classmethod
    def _webhook(cls, value):
        return check_webhook_url(value)


class StreamCreate(_StreamFields):
    """A new stream. ``source_url``: an absolute file path or rtsp/http(s)/rtmp/udp/srt/file URL;
    ``max_fps``: detections per second (0: every frame); ``roi``: ``[x1, y1, x2, y2]`` in fractions
    of the frame; ``webhook_secret``: generated when a webhook is set without one (null is refused).
    Local files only with the admin token, under ``FACES_FILE_ROOTS``; hosts must resolve to public
    addresses or to ``FACES_ALLOWED_NETWORKS``."""

    name: Name = ""
    source_url: Text
    watchlist_service_id: RowId | None = None
    max_fps: float = 5.0
    min_face_size: int = 30
    roi: list[float] | None = None
    mode: str = "realtime"
    det_prob_threshold: float | None = Field(None, ge=0, le=1)
    save_frame: bool = False
    enabled: bool = True
    webhook_url: Text | None = None
    webhook_secret: Text | None = Field(None, min_length=8, max_length=255)


class StreamUpdate(_StreamFields):
    """Fields to change; a field sent as null clears it where that makes sense (roi, watchlist, webhook)."""

    name: Name | None = None
    source_url: Text | None = None
    watchlist_service_id: RowId | None = None
    max_fps: float | None = None
    min_face_size: int | None = None
    roi: list[float] | None = None
    mode: str | None = None
    det_prob_threshold: float | None = Field(None, ge=0, le=1)
    save_frame: bool | None = None
    enabled: bool | None = None
    webhook_url: Text | None = None
    webhook_secret: Text | None = Field(None, min_length=8, max_length=255)


NULLABLE = frozenset({"watchlist_service_id", "roi", "det_prob_threshold", "webhook_url", "webhook_secret"})
