"""Request and response bodies (CompreFace's JSON shapes)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


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
    subject: str = Field(min_length=1, max_length=255)


class SubjectsList(BaseModel):
    subjects: list[str]


class Updated(BaseModel):
    updated: bool


class EmbeddingsBody(BaseModel):
    embeddings: list[list[float]] = Field(min_length=1)


class EmbeddingsVerifyBody(BaseModel):
    source: list[float]
    targets: list[list[float]] = Field(min_length=1)


class NameBody(BaseModel):
    name: str = Field(min_length=1, max_length=255)


class ServiceCreate(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    type: Literal["recognition", "detection", "verification"]
    similarity_threshold: float | None = Field(None, ge=0, le=1)
    shards: int | None = Field(None, ge=1, le=256)


class ServiceUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=255)
    similarity_threshold: float | None = Field(None, ge=0, le=1)


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
    created_at: str
    api_key: str | None = None
