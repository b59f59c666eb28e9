"""Request and response bodies of the sightings and identities of unknown faces."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from serve_app.validation import Name, RowId

MAX_SPLIT = 10000


class IdentityOut(BaseModel):
    id: int
    sightings: int
    first_seen: datetime
    last_seen: datetime
    best_sighting: str = Field(description="id of its best-quality sighting (crop: /sightings/{id}/img)")
    sources: list[str] = Field(description="where it was seen (up to 20 sources)")
    ignored: bool


class IdentitiesPage(BaseModel):
    identities: list[IdentityOut]
    page_number: int
    page_size: int
    total_elements: int


class SightingOut(BaseModel):
    id: str
    seen_at: datetime
    source: str
    box: dict
    quality: float
    subject: str | None = Field(description="the subject it matched when seen (or was promoted to)")
    identity: int | None = Field(description="its identity of unknown faces, if any")


class SightingMatchOut(SightingOut):
    similarity: float
    crop: str = Field(description="the aligned face crop, base64 JPEG")


class SightingsSearchOut(BaseModel):
    result: list[list[SightingMatchOut]] = Field(description="per face (or embedding) in, its matches, best first")


class MergeBody(BaseModel):
    identity: RowId = Field(description="the identity whose sightings join this one (it ceases to exist)")


class SplitBody(BaseModel):
    sighting_ids: list[str] = Field(min_length=1, max_length=MAX_SPLIT,
                                    description="sightings of the identity that move to a new identity")


class SplitOut(BaseModel):
    identity: int


class PromoteBody(BaseModel):
    subject: Name
    faces: int = Field(5, ge=1, le=100, description="how many of its best sightings are enrolled")


class PromoteOut(BaseModel):
    subject: str
    enrolled: int
