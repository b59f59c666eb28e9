"""``faces video add | list | rm | scan``: video streams of a running platform, and offline scans.

``add``/``list``/``rm`` talk to the HTTP API (``--url``, with the admin token or a video service's
API key). ``scan`` needs no running platform: it reads one file with a local face pipeline, matches
against a recognition service's faces read straight from its tables (PostgreSQL and LanceDB of the
configured data dir), and prints the events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from pathlib import Path

import numpy as np

from batch_jobs.errors import JobInputError
from facecore.models import SFACE
from facecore.pipeline import FacePipeline
from faces_cli.api_calls import api_call, api_client
from faces_cli.service_names import add_service_argument
from faces_settings import Settings, get_settings
from facevideo.config import MODES, ProcessingOptions, check_roi, check_source_url
from facevideo.events import VideoEvent
from facevideo.processor import LocalBackend, MatrixWatchlist, StreamProcessor
from facevideo.scan import scan_source
from facevideo.source import SourceError


def _roi(text: str | None):
    if text is None:
        return None
    try:
        return list(check_roi([float(v) for v in text.split(",")]))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_command(args: argparse.Namespace) -> int:
    settings = {"name": args.name, "watchlist_service_id": args.watchlist, "max_fps": args.fps,
                "min_face_size": args.min_face_size, "roi": _roi(args.roi), "mode": args.mode,
                "save_frame": args.save_frame, "enabled": not args.disabled, "webhook_url": args.webhook,
                "webhook_secret": args.webhook_secret}

    def add() -> None:
        with api_client(args) as client:
            stream = client.add_stream(args.source, **{k: v for k, v in settings.items() if v is not None})
        print(json.dumps(stream, indent=2) if args.json else f"added stream {stream['id']}: {stream['source_url']}")
        if stream.get("webhook_secret") and not args.json:
            print(f"webhook secret (shown once): {stream['webhook_secret']}")

    return api_call(add)


def list_command(args: argparse.Namespace) -> int:
    def show() -> None:
        with api_client(args) as client:
            streams = client.list_streams()
        if args.json:
            print(json.dumps(streams, indent=2))
            return
        for stream in streams:
            status = stream["status"]
            reason = f" ({status['reason']})" if status["reason"] else ""
            print(f"{stream['id']:>4}  {status['state']:<12} {status['fps']:>5.1f} fps  frames={status['frames']} "
                  f"faces={status['faces']} events={status['events']}  {stream['mode']:<8} "
                  f"{stream['source_url']}{reason}")

    return api_call(show)


def rm_command(args: argparse.Namespace) -> int:
    def remove() -> None:
        with api_client(args) as client:
            for stream_id in args.ids:
                client.delete_stream(stream_id)
                print(f"deleted stream {stream_id}")

    return api_call(remove)


async def _load_watchlist(settings: Settings, service_ref: str) -> tuple[MatrixWatchlist, float]:
    """The faces of the recognition service named ``service_ref`` (see :mod:`faces_cli.service_names`),
    read straight from its tables."""
    from batch_jobs.runtime import control_plane
    from faceindex.layout import ServiceLayout
    from faces_cli.service_names import resolve_service

    async with control_plane(settings) as control:
        service = await resolve_service(control, service_ref)
    if service.model != SFACE.name:
        raise JobInputError(f"video scans embed with {SFACE.name}; service {service.name!r} holds "
                            f"{service.model} embeddings")
    subjects: list[str] = []
    vectors = []
    for shard in range(service.shards):
        table = ServiceLayout(service.id, service.shards).open_table(settings.faces_uri, shard, SFACE.embedding_dim)
        _, shard_subjects, shard_vectors = table.scan_index_columns()
        subjects.extend(shard_subjects)
        vectors.append(shard_vectors)
    threshold = service.similarity_threshold if service.similarity_threshold is not None else settings.recognition_threshold
    return MatrixWatchlist(subjects, np.concatenate(vectors) if vectors else np.zeros((0, SFACE.embedding_dim))), threshold


def _event_line(event: VideoEvent) -> str:
    who = f"{event.subject} (similarity {event.similarity:.3f})" if event.subject else "unknown"
    box = ",".join(f"{v:.0f}" for v in event.box)
    return (f"[{event.first_seen:7.2f}s - {event.last_seen:7.2f}s] track {event.track_id:<12} {event.reason:<11} "
            f"{who}  quality={event.quality:.2f} box=({box})")


def _event_dict(event: VideoEvent, crop: str | None) -> dict:
    return {"track_id": event.track_id, "reason": event.reason, "first_seen": round(event.first_seen, 3),
            "last_seen": round(event.last_seen, 3), "box": list(event.box), "quality": event.quality,
            "detection_score": event.detection_score, "subject": event.subject, "similarity": event.similarity,
            "unknown": event.unknown, "crop": crop}


def scan_command(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        source = check_source_url(str(Path(args.file).resolve()) if "://" not in args.file else args.file)
        if args.service:
            watchlist, threshold = asyncio.run(_load_watchlist(settings, args.service))
        else:
            watchlist, threshold = None, settings.recognition_threshold
        options = ProcessingOptions(mode=args.mode, max_fps=args.fps, min_face_size=args.min_face_size,
                                    roi=_roi(args.roi), det_prob_threshold=args.det_prob_threshold,
                                    recognition_threshold=threshold)
    except (ValueError, JobInputError, argparse.ArgumentTypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    processor = StreamProcessor(LocalBackend(FacePipeline(settings.pipeline_config())), watchlist, options,
                                session=secrets.token_hex(2))
    started = time.perf_counter()
    try:
        events = asyncio.run(scan_source(source, processor))
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    crops = _save_crops(events, args.crops) if args.crops else [None] * len(events)
    if args.json:
        print(json.dumps([_event_dict(event, crop) for event, crop in zip(events, crops)], indent=2))
    else:
        for event in events:
            print(_event_line(event))
        print(f"{len(events)} event(s); {processor.frames} frames, {processor.faces} faces in {seconds:.1f} s "
              f"({processor.frames / max(seconds, 1e-9):.1f} frames/s)")
    return 0


def _save_crops(events: list[VideoEvent], folder: str) -> list[str]:
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, event in enumerate(events, start=1):
        path = target / f"{number:04d}-{event.track_id}-{event.reason}.jpg"
        path.write_bytes(event.crop)
        paths.append(str(path))
    return paths


def add_parsers(subparsers, det_prob_threshold: float) -> None:
    video = subparsers.add_parser("video", help="video streams and offline video scans")
    commands = video.add_subparsers(dest="video_command", required=True)

    def connection(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--url", default=None, help="API base URL (default http://FACES_HOST:FACES_PORT)")
        parser.add_argument("--admin-token", default=None, help="admin token (default FACES_ADMIN_TOKEN)")
        parser.add_argument("--api-key", default=None, help="a video service's API key instead of the admin token")
        parser.add_argument("--json", action="store_true", help="print JSON")

    add = commands.add_parser("add", help="add a stream to the running platform")
    add.add_argument("source", help="file path, rtsp://, http(s):// (MJPEG, HLS), rtmp://, ...")
    add.add_argument("--name", default=None)
    add.add_argument("--watchlist", type=int, default=None, help="id of the recognition service to match against")
    add.add_argument("--fps", type=float, default=None, help="detections per second (0: every frame; default 5)")
    add.add_argument("--mode", choices=MODES, default=None, help="realtime (default) or overall")
    add.add_argument("--min-face-size", type=int, default=None, help="smallest face side in pixels (default 30)")
    add.add_argument("--roi", default=None, help="x1,y1,x2,y2 in fractions of the frame")
    add.add_argument("--save-frame", action="store_true", default=None, help="keep each event's full frame")
    add.add_argument("--disabled", action="store_true", help="add it stopped")
    add.add_argument("--webhook", default=None, help="POST each event to this URL")
    add.add_argument("--webhook-secret", default=None, help="HMAC secret of the webhook (default: generated)")
    connection(add)
    add.set_defaults(handler=add_command)

    listing = commands.add_parser("list", help="streams and their status")
    connection(listing)
    listing.set_defaults(handler=list_command)

    remove = commands.add_parser("rm", help="delete streams (and their events)")
    remove.add_argument("ids", type=int, nargs="+")
    connection(remove)
    remove.set_defaults(handler=rm_command)

    scan = commands.add_parser("scan", help="process one video file offline and print its events")
    scan.add_argument("file", help="the video (any format FFmpeg reads; a URL works too)")
    add_service_argument(scan, required=False, help="recognition service whose faces are the watchlist: its id, "
                                                    "APP/SERVICE, or a service name unique to one application")
    scan.add_argument("--mode", choices=MODES, default="overall", help="overall (default: one event per track) "
                                                                       "or realtime")
    scan.add_argument("--fps", type=float, default=0.0, help="detections per second of video (0: every frame)")
    scan.add_argument("--min-face-size", type=int, default=30)
    scan.add_argument("--roi", default=None, help="x1,y1,x2,y2 in fractions of the frame")
    scan.add_argument("--det-prob-threshold", type=float, default=det_prob_threshold)
    scan.add_argument("--crops", default=None, help="write each event's crop JPEG into this folder")
    scan.add_argument("--json", action="store_true", help="print JSON")
    scan.set_defaults(handler=scan_command)
