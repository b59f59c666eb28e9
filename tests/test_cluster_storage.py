"""Cluster storage on a local S3-compatible server (real S3 protocol): shard tables and saved indexes,
event media and job reports, with nothing written to the local disk."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from faceindex.config import SearchConfig
from faceindex.shard import IndexShard
from batch_jobs.enroll import default_report
from batch_jobs.report import ReportWriter, read_report
from faces_settings import Settings
from object_store import ranged_reads, s3_server
from store.event_media import EventMedia
from store.faces import FaceRecord
from store.object_storage import child_names, delete_tree, delete_uri, read_uri, write_uri

NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


def unit_rows(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, 128)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("where", ["s3", "local"])
def test_files_round_trip_on_s3_and_locally(s3, tmp_path, where):
    root = s3.uri("roundtrip") if where == "s3" else str(tmp_path / "roundtrip")
    write_uri(f"{root}/a/one.bin", b"first")
    write_uri(f"{root}/a/one.bin", b"second")  # replaced whole
    write_uri(f"{root}/b/two.bin", b"2")
    assert read_uri(f"{root}/a/one.bin") == b"second"
    assert read_uri(f"{root}/a/missing.bin") is None
    assert sorted(child_names(root)) == ["a", "b"]
    delete_uri(f"{root}/a/one.bin")
    delete_uri(f"{root}/a/one.bin")  # already gone: fine
    assert read_uri(f"{root}/a/one.bin") is None
    delete_tree(f"{root}/b")
    assert read_uri(f"{root}/b/two.bin") is None
    assert child_names(f"{root}/nothing-here") == []


@pytest.mark.parametrize("where", ["s3", "local"])
def test_a_large_file_is_read_whole_in_parallel_pieces(s3, tmp_path, where, monkeypatch):
    import store.object_storage as object_storage

    monkeypatch.setattr(object_storage, "READ_PIECE_BYTES", 4096)  # 10 pieces and a short last one
    data = np.random.default_rng(5).integers(0, 256, 9 * 4096 + 123, dtype=np.uint8).tobytes()
    uri = s3.uri("pieces", "blob.bin") if where == "s3" else str(tmp_path / "blob.bin")
    write_uri(uri, data)
    assert read_uri(uri) == data
    write_uri(uri, data[:4096])  # exactly one piece
    assert read_uri(uri) == data[:4096]
    write_uri(uri, b"")
    assert read_uri(uri) == b""


def test_the_test_server_answers_ranges_by_reading_them(s3):
    """Ranged GETs read only the range (tests/object_store.py) and answer exactly as S3 does."""
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    data = np.random.default_rng(6).integers(0, 256, 6 * 2**20 + 7, dtype=np.uint8).tobytes()  # spills to disk
    client.put_object(Bucket=s3.bucket, Key="ranges/blob.bin", Body=data)
    served = ranged_reads["served"]
    for wanted, first, last in [("bytes=0-0", 0, 0), ("bytes=5-4096", 5, 4096),
                                (f"bytes={len(data) - 10}-{len(data) + 99}", len(data) - 10, len(data) - 1),
                                ("bytes=3000000-", 3_000_000, len(data) - 1)]:
        answer = client.get_object(Bucket=s3.bucket, Key="ranges/blob.bin", Range=wanted)
        assert answer["Body"].read() == data[first:last + 1]
        assert answer["ContentRange"] == f"bytes {first}-{last}/{len(data)}"
        assert answer["ContentLength"] == last - first + 1
    assert ranged_reads["served"] == served + 4
    suffix = client.get_object(Bucket=s3.bucket, Key="ranges/blob.bin", Range="bytes=-100")  # moto's own path
    assert suffix["Body"].read() == data[-100:]
    with pytest.raises(ClientError) as beyond:
        client.get_object(Bucket=s3.bucket, Key="ranges/blob.bin", Range=f"bytes={len(data)}-")
    assert beyond.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    with pytest.raises(ClientError) as missing:
        client.get_object(Bucket=s3.bucket, Key="ranges/none.bin", Range="bytes=0-9")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"


def test_event_media_on_s3_are_read_by_another_reader_and_deleted_per_stream(s3):
    writer, reader = EventMedia(s3.uri("media", "video")), EventMedia(s3.uri("media", "video"))
    relative = writer.save(7, "event-1-crop", b"\xff\xd8jpeg")
    writer.save(8, "event-2-crop", b"\xff\xd8other")
    assert reader.read(relative) == b"\xff\xd8jpeg"
    assert reader.read("../7/" + relative) is None and reader.read("/etc/passwd") is None
    writer.delete_stream(7)
    assert reader.read(relative) is None
    assert [key for key in s3.keys("media/video/") if key.startswith("media/video/7/")] == []
    assert any(key.startswith("media/video/8/") for key in s3.keys("media/video/"))


def indexed_shard_on_s3(s3, table: str, faces: int, seed: int) -> tuple[IndexShard, SearchConfig, np.ndarray]:
    """A shard on S3 holding ``faces`` faces (face-<i>) with its approximate index built and saved there."""
    search = SearchConfig(mode="ann", index_dir=s3.uri("media", "indexes"))
    vectors = unit_rows(faces, seed=seed)
    shard = IndexShard(s3.uri("lancedb"), table, 128, search)
    shard.add([FaceRecord(f"face-{n}", f"subject-{n % 300}", v, "sface@test", b"", None, NOW)
               for n, v in enumerate(vectors)])
    shard.build_index()
    return shard, search, vectors


def test_shard_keeps_table_and_saved_index_on_s3_and_restores_both(s3, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written locally would land here
    shard, search, vectors = indexed_shard_on_s3(s3, "faces_s1_n1_p0", 3000, seed=1)
    assert "media/indexes/faces_s1_n1_p0.ivf.npz" in s3.keys("media/indexes/")
    restarted = IndexShard(s3.uri("lancedb"), "faces_s1_n1_p0", 128, search)
    stats = restarted.stats()
    assert (stats["faces"], stats["search"], stats["indexed_faces"], stats["last_build_seconds"]) == (3000, "ann", 3000, 0.0)
    assert restarted.search_faces(vectors[1234:1235], 1)[0][0][0] == "face-1234"
    assert list(tmp_path.iterdir()) == []
    restarted.drop()
    assert [key for key in s3.keys("media/indexes/") if key.endswith(".npz")] == []


def test_a_replica_loads_the_primarys_saved_index_from_s3_and_leaves_it_there(s3, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    primary, search, vectors = indexed_shard_on_s3(s3, "faces_s2_n1_p0", 2000, seed=2)
    replica = IndexShard(s3.uri("lancedb"), "faces_s2_n1_p0", 128, search, replica=True)
    stats = replica.stats()
    assert (stats["faces"], stats["search"], stats["indexed_faces"], stats["last_build_seconds"]) == (2000, "ann", 2000, 0.0)
    assert replica.search_faces(vectors[77:78], 1)[0][0][0] == "face-77"
    replica.build_index()  # its own copy, not saved over the primary's
    replica.drop()
    assert [key for key in s3.keys("media/indexes/") if key.endswith(".npz")] == ["media/indexes/faces_s2_n1_p0.ivf.npz"]
    assert primary.count() == 2000 and IndexShard(s3.uri("lancedb"), "faces_s2_n1_p0", 128, search).count() == 2000
    assert list(tmp_path.iterdir()) == []
    primary.drop()


def test_job_reports_default_to_the_media_uri_on_s3(s3):
    settings = Settings(media_uri=s3.uri("media"))
    uri = default_report(settings, 42)
    assert uri == s3.uri("media", "jobs", "42", "report.parquet")
    writer = ReportWriter(uri)
    writer.write(pa.table({"source": ["a.jpg"], "subject": ["alice"], "status": ["enrolled"], "reason": [None],
                           "faces": [1], "face_ids": [["f1"]]}))
    writer.close()
    assert "media/jobs/42/report.parquet" in s3.keys("media/jobs/")
    assert read_report(uri).column("subject").to_pylist() == ["alice"]
