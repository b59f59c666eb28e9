"""The video pipeline on a synthetic clip: local processing (no Ray), the Embedder's video requests,
and ``faces video scan`` end to end against a platform's service."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from actors.face_batch import FaceRequest, process_batch
from facecore.align import align_face
from facevideo.config import ProcessingOptions
from facevideo.processor import LocalBackend, MatrixWatchlist, StreamProcessor
from facevideo.scan import scan_source
from facevideo.source import FrameReader, SourceError, VideoSource
from video_samples import (ABC_TRACKS, DISTRACTORS, PERSON_A, PERSON_B, enroll_watchlist, photos, still,
                           write_abc_video)

TIME_TOLERANCE_S = 0.25


@pytest.fixture(scope="module")
def abc_video(tmp_path_factory, data_dir):
    return write_abc_video(tmp_path_factory.mktemp("video") / "abc.mp4", data_dir)


@pytest.fixture(scope="module")
def local_watchlist(pipeline, data_dir) -> MatrixWatchlist:
    names = [PERSON_A, PERSON_B, *DISTRACTORS]
    vectors = pipeline.embed([photos(data_dir, name)[0].read_bytes() for name in names], limit=1)
    return MatrixWatchlist(names, np.stack([v[0] for v in vectors]))


def scan(video, pipeline, watchlist, mode: str, max_fps: float = 0.0):
    processor = StreamProcessor(LocalBackend(pipeline), watchlist, ProcessingOptions(mode=mode, max_fps=max_fps),
                                session="t")
    return asyncio.run(scan_source(str(video), processor)), processor


def assert_abc_tracks(events: list[dict]) -> None:
    """One event per expected track: same subjects (None: unknown), times within the tolerance."""
    found = sorted(events, key=lambda e: (e["first_seen"], e["subject"] or ""))
    expected = sorted(ABC_TRACKS, key=lambda t: (t[1], t[0] or ""))
    assert len(found) == len(expected), found
    assert len({e["track_id"] for e in found}) == len(expected)
    for event, (subject, first, last) in zip(found, expected):
        assert event["subject"] == subject, (event, subject)
        assert abs(event["first_seen"] - first) <= TIME_TOLERANCE_S, (event, first)
        assert abs(event["last_seen"] - last) <= TIME_TOLERANCE_S, (event, last)


def test_overall_mode_gives_one_event_per_track_with_the_right_people(abc_video, pipeline, local_watchlist):
    events, processor = scan(abc_video, pipeline, local_watchlist, "overall")
    assert_abc_tracks([{"track_id": e.track_id, "subject": e.subject, "first_seen": e.first_seen,
                        "last_seen": e.last_seen} for e in events])
    assert all(e.reason == "ended" for e in events)
    assert all(e.similarity >= 0.95 for e in events if e.subject)
    assert processor.frames == 105 and processor.faces >= 90
    assert processor.embedded < processor.faces / 2, "embeddings are computed on demand, not per face"
    assert all(e.crop[:2] == b"\xff\xd8" for e in events)


def test_realtime_mode_reports_each_track_when_it_appears(abc_video, pipeline, local_watchlist):
    events, _ = scan(abc_video, pipeline, local_watchlist, "realtime", max_fps=5)
    appeared = [e for e in events if e.reason == "appeared"]
    assert len(appeared) == len(ABC_TRACKS) and len({e.track_id for e in appeared}) == len(ABC_TRACKS)
    assert sorted((e.first_seen, e.subject or "") for e in appeared)[0][1] == PERSON_A
    # reported within two sampled frames (0.2 s apart) of the face's first appearance
    starts = sorted(first for _, first, _ in ABC_TRACKS)
    assert all(abs(e.last_seen - start) <= 0.45 for e, start in zip(sorted(appeared, key=lambda e: e.first_seen), starts))
    assert {e.reason for e in events} <= {"appeared", "better_shot"}


def test_embedder_takes_video_frames_as_arrays_and_embeds_chips(pipeline, data_dir):
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[50:300, 100:350] = still(data_dir, PERSON_A, 1)
    encoded = photos(data_dir, PERSON_B)[1].read_bytes()
    as_array, as_bytes = process_batch(pipeline, [FaceRequest(image=frame, det_prob_threshold=0.8, embed=False),
                                                  FaceRequest(image=encoded, det_prob_threshold=0.8)])
    assert len(as_array.faces) == 1 and as_array.faces[0].embedding is None
    assert 100 <= as_array.faces[0].box[0] < as_array.faces[0].box[2] <= 350
    chip = align_face(frame, as_array.faces[0].landmarks)
    first, empty, second = pipeline.embedder.embed_groups([chip[None], np.zeros((0, 112, 112, 3), np.uint8),
                                                           np.stack([chip, chip])])
    assert first.shape == (1, 128) and empty.shape == (0, 128) and second.shape == (2, 128)
    assert float(first[0] @ second[1]) > 0.9999
    reference = pipeline.embed([photos(data_dir, PERSON_A)[0].read_bytes()], limit=1)[0][0]
    assert float(first[0] @ reference) > 0.4, "the chip is the right face"


def test_unreadable_sources_fail_with_a_reason(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 255, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError) as failure:
        VideoSource(str(corrupt))
    assert failure.value.permanent and "not a readable video" in str(failure.value)
    with pytest.raises(SourceError) as missing:
        VideoSource(str(tmp_path / "missing.mp4"))
    assert not missing.value.permanent and "No such file" in str(missing.value)

    async def open_reader():
        await FrameReader(str(corrupt), 0, realtime=False).start()

    with pytest.raises(SourceError):
        asyncio.run(open_reader())


def test_faces_video_scan_cli_matches_a_platform_service(server, admin, abc_video, data_dir, tmp_path):
    enroll_watchlist(admin, server.url, data_dir, "video-scan-cli")
    env = {**os.environ, "FACES_DATA_DIR": str(server.settings.data_dir),
           "FACES_POSTGRES_DSN": server.settings.postgres_dsn, "FACES_THREADS": "2"}
    result = subprocess.run([sys.executable, "-m", "faces_cli.main", "video", "scan", str(abc_video),
                             "--service", "video-scan-cli/watchlist", "--json",
                             "--crops", str(tmp_path / "crops")],
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)
    assert_abc_tracks(events)
    assert all((tmp_path / "crops" / os.path.basename(e["crop"])).is_file() for e in events)

    unknown_service = subprocess.run([sys.executable, "-m", "faces_cli.main", "video", "scan", str(abc_video),
                                      "--service", "no-such-service"], env=env, capture_output=True, text=True,
                                     timeout=120)
    assert unknown_service.returncode == 2 and "no service named 'no-such-service'" in unknown_service.stderr
