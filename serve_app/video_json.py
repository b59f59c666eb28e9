"""JSON views of video streams and events: one shape for the API, Server-Sent Events and webhooks."""

from __future__ import annotations

from store.video_store import StoredEvent, Stream

EVENTS_PATH = "/api/v1/video/events"


def event_json(event: StoredEvent) -> dict:
    """An event as clients see it; ``crop_url``/``frame_url`` are paths on the API."""
    x1, y1, x2, y2 = event.box
    return {
        "id": event.id,
        "stream_id": event.stream_id,
        "track_id": event.track_id,
        "reason": event.reason,
        "first_seen": event.first_seen.isoformat(),
        "last_seen": event.last_seen.isoformat(),
        "box": {"x_min": round(x1), "y_min": round(y1), "x_max": round(x2), "y_max": round(y2)},
        "quality": round(event.quality, 4),
        "detection_score": round(event.detection_score, 4),
        "subject": event.subject,
        "similarity": None if event.similarity is None else round(event.similarity, 5),
        "unknown": event.subject is None,
        "crop_url": f"{EVENTS_PATH}/{event.id}/crop",
        "frame_url": f"{EVENTS_PATH}/{event.id}/frame" if event.frame_path else None,
        "created_at": event.created_at.isoformat(),
    }


def stream_json(stream: Stream, show_secret: bool = False) -> dict:
    """A stream with its status. The webhook secret is shown only when ``show_secret`` (on creation)."""
    status = stream.status
    if status is None:
        status_json = {"state": "pending" if stream.enabled else "stopped", "reason": None, "frames": 0,
                       "faces": 0, "events": 0, "fps": 0.0, "started_at": None, "updated_at": None}
    else:
        status_json = {"state": status.state, "reason": status.reason, "frames": status.frames,
                       "faces": status.faces, "events": status.events, "fps": round(status.fps, 2),
                       "started_at": status.started_at.isoformat() if status.started_at else None,
                       "updated_at": status.updated_at.isoformat()}
    body = {name: value for name, value in stream.settings().items() if name != "webhook_secret"}
    body["roi"] = list(stream.roi) if stream.roi is not None else None
    if show_secret:
        body["webhook_secret"] = stream.webhook_secret
    return {"id": stream.id, **body, "owner_service_id": stream.owner_service_id,
            "created_at": stream.created_at.isoformat(), "updated_at": stream.updated_at.isoformat(),
            "status": status_json}
