"""JSON views of video streams and events: one shape for the API, Server-Sent Events and webhooks.

Streams are shown with the credentials of their URLs masked; the reason of a stream's state is the
worker's own (masked) for the admin, and a fixed sentence per state for a video service key, so that
a tenant learns nothing about files, hosts or ports from it.
"""

from __future__ import annotations

from outbound import redact
from store.video_store import StoredEvent, Stream

EVENTS_PATH = "/api/v1/video/events"
PUBLIC_REASONS = {"reconnecting": "the source cannot be reached or read at the moment; retrying",
                  "failed": "the source cannot be played"}


def event_json(event: StoredEvent) -> dict:
    """An event as clients see it; ``crop_url``/``frame_url`` are paths on the API (None: no image, as
    beyond the event media quota of the stream's service). ``sighting_id`` and ``identity_id``: its
    best shot's sighting in the watchlist service and that sighting's identity of unknown faces (see
    the unknowns API of that service's recognition key), None when there is none."""
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
        "crop_url": f"{EVENTS_PATH}/{event.id}/crop" if event.crop_path else None,
        "frame_url": f"{EVENTS_PATH}/{event.id}/frame" if event.frame_path else None,
        "created_at": event.created_at.isoformat(),
        "sighting_id": event.sighting_id,
        "identity_id": event.identity_id,
    }


def stream_json(stream: Stream, show_secret: bool = False, detail: bool = True) -> dict:
    """A stream with its status. The webhook secret is shown only when ``show_secret`` (on creation);
    ``detail``: the state's own reason (the admin), else the generic one."""
    status = stream.status
    if status is None:
        status_json = {"state": "pending" if stream.enabled else "stopped", "reason": None, "frames": 0,
                       "faces": 0, "events": 0, "fps": 0.0, "started_at": None, "updated_at": None}
    else:
        reason = redact(status.reason) if detail else PUBLIC_REASONS.get(status.state)
        status_json = {"state": status.state, "reason": reason, "frames": status.frames,
                       "faces": status.faces, "events": status.events, "fps": round(status.fps, 2),
                       "started_at": status.started_at.isoformat() if status.started_at else None,
                       "updated_at": status.updated_at.isoformat()}
    body = {name: value for name, value in stream.settings().items() if name != "webhook_secret"}
    body["roi"] = list(stream.roi) if stream.roi is not None else None
    body["source_url"], body["webhook_url"] = redact(stream.source_url), redact(stream.webhook_url)
    if show_secret:
        body["webhook_secret"] = stream.webhook_secret
    return {"id": stream.id, **body, "owner_service_id": stream.owner_service_id,
            "created_at": stream.created_at.isoformat(), "updated_at": stream.updated_at.isoformat(),
            "status": status_json}
