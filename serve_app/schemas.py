"""Request and response bodies (CompreFace's JSON shapes)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from batch_jobs.outcomes import OnMultiple
from facecore.embed import DEFAULT_EMBEDDING_MODEL, EMBEDDING_MODELS
from serve_app.validation import INT64_MAX, Name, RowId, Text
from store.control import MAX_SHARD_REPLICAS


SHARD_REPLICAS_HELP = ("actors per index shard: the primary and shard_replicas - 1 read replicas on other nodes; "
                       "null: the platform's default (FACES_SHARD_REPLICAS)")
MAX_EMBEDDINGS = 1000  # per request; 1000 embeddings in JSON stay under FACES_MAX_JSON_BYTES' default


class FaceRef(BaseModel):
    image_id: str
    subject: str


class FacesPage(BaseModel):
    faces: list[FaceRef]
    page_number: int
    page_size: int
    total_pages: int
    total_elements: int


class Deleted(BaseModel):
    deleted: int


class SubjectBody(BaseModel):
    subject: Name


class SubjectsList(BaseModel):
    subjects: list[str]


class SubjectCount(BaseModel):
    subject: str
    faces: int


class SubjectsPage(BaseModel):
    subjects: list[SubjectCount]
    page_number: int
    page_size: int
    total_elements: int


class Updated(BaseModel):
    updated: bool


class EmbeddingsBody(BaseModel):
    embeddings: list[list[float]] = Field(min_length=1, max_length=MAX_EMBEDDINGS)


class EmbeddingsVerifyBody(BaseModel):
    source: list[float]
    targets: list[list[float]] = Field(min_length=1, max_length=MAX_EMBEDDINGS)


class NameBody(BaseModel):
    name: Name


class ServiceCreate(BaseModel):
    name: Name
    type: Literal["recognition", "detection", "verification", "video"]
    similarity_threshold: float | None = Field(None, ge=0, le=1)
    shards: int | None = Field(None, ge=1, le=256)
    shard_replicas: int | None = Field(None, ge=1, le=MAX_SHARD_REPLICAS, description=SHARD_REPLICAS_HELP)
    model: str = Field(DEFAULT_EMBEDDING_MODEL, max_length=64,
                       description=f"embedding model: {', '.join(EMBEDDING_MODELS)} (fixed until a migration)")


class ServiceUpdate(BaseModel):
    name: Name | None = None
    similarity_threshold: float | None = Field(None, ge=0, le=1)
    shard_replicas: int | None = Field(None, ge=1, le=MAX_SHARD_REPLICAS, description=SHARD_REPLICAS_HELP)


class ApplicationOut(BaseModel):
    id: int
    name: str
    created_at: str


class ServiceOut(BaseModel):
    id: int
    application_id: int
    name: str
    type: str
    similarity_threshold: float | None
    shards: int
    shard_replicas: int | None = Field(description=SHARD_REPLICAS_HELP)
    created_at: str
    model: str
    api_key: str | None = None


class EnrollJobCreate(BaseModel):
    """A bulk enrollment: exactly one of ``path`` (a folder per subject) or ``manifest``."""

    service_id: RowId
    path: Text | None = Field(None, min_length=1, description="folder tree: one sub-folder of images per subject")
    manifest: Text | None = Field(None, min_length=1,
                                 description="CSV, JSON-lines or Parquet with path (or uri), subject, face_id")
    on_multiple: OnMultiple = Field(OnMultiple.LARGEST, description="images with several faces: largest, reject, all")
    report: Text | None = Field(None, description="where to write the report (default: under the data dir)")


class MigrateJobCreate(BaseModel):
    service_id: RowId
    model: Text | None = Field(None, description="embedding model NAME or NAME@VERSION; another model than the "
                                "service's switches the service to it (default: the service's own)")


class JobOut(BaseModel):
    id: int
    kind: str
    service_id: int
    input: str
    policy: str | None
    options: dict
    status: str = Field(description="pending, running, succeeded, failed, or lost (running without a heartbeat)")
    total: int | None
    processed: int
    progress: float | None
    images_per_s: float | None
    eta_s: float | None
    counts: dict[str, int]
    report_path: str | None
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str


INT32_MAX = 2**31 - 1


class QuotasUpdate(BaseModel):
    """Quotas to change; a field left out stays as it is, ``null`` returns it to the platform's default."""

    requests_per_s: float | None = Field(None, gt=0, le=1e9, description="requests per second (429 beyond)")
    faces: int | None = Field(None, ge=0, le=INT64_MAX, description="faces of a recognition service")
    streams: int | None = Field(None, ge=0, le=INT32_MAX, description="video streams of a video service")
    sse_connections: int | None = Field(None, ge=0, le=INT32_MAX,
                                        description="concurrent live-event (SSE) connections of a video service")
    event_media_bytes: int | None = Field(None, ge=0, le=INT64_MAX,
                                          description="bytes of event crops and frames of a video service's streams")
    sightings: int | None = Field(None, ge=0, le=INT64_MAX, description="sightings of a recognition service")


class QuotasOut(BaseModel):
    service_id: int
    requests_per_s: float
    faces: int
    streams: int
    sse_connections: int
    event_media_bytes: int
    sightings: int
    custom: list[str] = Field(description="quotas set for this service; the others are the platform's defaults")
