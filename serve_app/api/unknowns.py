"""Identities of unknown faces and past sightings of a recognition service.

Faces are remembered by ``POST /recognize?remember_unknowns=true``; here they are listed, searched
by face, and their identities promoted to subjects, merged, split or ignored.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from actors.unknown_faces import SightingMatch
from facecore.context_crop import thumbnail_jpeg
from serve_app.api.params import DetProbThreshold
from serve_app.api.recognition import check_faces_quota
from serve_app.auth import recognition_service
from serve_app.context import AppContext, request_context
from serve_app.face_requests import analyze_image, embeddings_matrix
from serve_app.schemas import EmbeddingsBody
from serve_app.unknown_schemas import (
    IdentitiesPage,
    IdentityOut,
    MergeBody,
    PromoteBody,
    PromoteOut,
    SightingMatchOut,
    SightingOut,
    SightingsSearchOut,
    SplitBody,
    SplitOut,
)
from serve_app.uploads import image_request_body, read_images
from serve_app.validation import Name, RowId
from store.control import Service
from store.sightings import SightingStore

router = APIRouter(prefix="/api/v1/recognition", tags=["unknown faces"])
Ctx = Annotated[AppContext, Depends(request_context)]
RecognitionService = Annotated[Service, Depends(recognition_service)]
IdentityId = Annotated[RowId, Path(description="an identity of unknown faces of this service")]
Since = Query(None, description="only sightings seen at or after this time (ISO 8601)")
Until = Query(None, description="only sightings seen at or before this time (ISO 8601)")
Source = Query(None, description="only sightings of this source (a camera, a request id)")
Matches = Query(10, ge=1, le=100, description="sightings to return per face")


async def _store(context: AppContext) -> SightingStore:
    return SightingStore((await context.control()).pool)


@router.get("/identities", response_model=IdentitiesPage)
async def list_identities(service: RecognitionService, context: Ctx, page: int = Query(0, ge=0),
                          size: int = Query(20, ge=1, le=1000),
                          ignored: bool = Query(False, description="list the ignored identities instead")):
    """Identities of unknown faces, the most recently seen first."""
    rows, total = await (await _store(context)).identities(service.id, ignored, page * size, size)
    return IdentitiesPage(identities=[IdentityOut(**vars(row)) for row in rows], page_number=page, page_size=size,
                          total_elements=total)


@router.get("/identities/{identity}", response_model=IdentityOut)
async def get_identity(identity: IdentityId, service: RecognitionService, context: Ctx):
    return IdentityOut(**vars(await (await _store(context)).identity(service.id, identity)))


@router.get("/identities/{identity}/sightings", response_model=list[SightingOut])
async def identity_sightings(identity: IdentityId, service: RecognitionService, context: Ctx,
                             page: int = Query(0, ge=0), size: int = Query(20, ge=1, le=1000)):
    """An identity's sightings, the latest first."""
    rows = await (await _store(context)).sightings_of(service.id, identity, page * size, size)
    return [SightingOut(**vars(row)) for row in rows]


@router.post("/identities/{identity}/promote", response_model=PromoteOut)
async def promote_identity(identity: IdentityId, body: PromoteBody, service: RecognitionService, context: Ctx):
    """Make an identity a subject: its best sightings are enrolled as the subject's faces."""
    unknown = await context.unknown_faces(service)
    await unknown.store.identity(service.id, identity)
    await check_faces_quota(context, service)
    faces = await unknown.best_faces(identity, body.faces, (await context.model_versions())["calculator"],
                                     body.subject)
    await (await context.gallery(service)).add_faces(faces)
    await unknown.promoted(identity, body.subject)
    return PromoteOut(subject=body.subject, enrolled=len(faces))


@router.post("/identities/{identity}/merge", response_model=IdentityOut)
async def merge_identities(identity: IdentityId, body: MergeBody, service: RecognitionService, context: Ctx):
    """The sightings of ``body.identity`` join this identity; that one ceases to exist."""
    unknown = await context.unknown_faces(service)
    await unknown.merge(identity, body.identity)
    return IdentityOut(**vars(await unknown.store.identity(service.id, identity)))


@router.post("/identities/{identity}/split", response_model=SplitOut)
async def split_identity(identity: IdentityId, body: SplitBody, service: RecognitionService, context: Ctx):
    """Move some sightings of an identity into a new identity."""
    new = await (await context.unknown_faces(service)).split(identity, body.sighting_ids)
    return SplitOut(identity=new)


@router.post("/identities/{identity}/ignore", response_model=IdentityOut)
async def ignore_identity(identity: IdentityId, service: RecognitionService, context: Ctx):
    """Stop listing an identity; its later sightings still join it (it does not come back as new)."""
    unknown = await context.unknown_faces(service)
    await unknown.ignore(identity)
    return IdentityOut(**vars(await unknown.store.identity(service.id, identity)))


@router.get("/sightings/{sighting_id}/img", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the aligned face crop"}})
async def sighting_image(sighting_id: str, service: RecognitionService, context: Ctx):
    crop = await (await context.unknown_faces(service)).crop(sighting_id)
    return Response(content=thumbnail_jpeg(crop), media_type="image/jpeg")


def _matches_json(results: list[list[SightingMatch]]) -> SightingsSearchOut:
    return SightingsSearchOut(result=[[SightingMatchOut(**vars(match.sighting), similarity=round(match.similarity, 5),
                                                        crop=base64.b64encode(thumbnail_jpeg(match.crop) if match.crop else b"").decode())
                                       for match in matches] for matches in results])


@router.post("/sightings/search", response_model=SightingsSearchOut, openapi_extra=image_request_body("file"))
async def search_sightings(request: Request, service: RecognitionService, context: Ctx,
                           limit: int = Matches, det_prob_threshold: float | None = DetProbThreshold,
                           since: datetime | None = Since, until: datetime | None = Until,
                           source: Name | None = Source):
    """Where else was this person seen? Per face of the image, the past sightings most alike."""
    context.require_sightings(service)
    image = (await read_images(request, ("file",), context.settings.max_upload_bytes))["file"]
    threshold = context.settings.det_prob_threshold if det_prob_threshold is None else det_prob_threshold
    response = await analyze_image(context, image, threshold)
    queries = np.stack([face.embedding for face in response.faces])
    return _matches_json(await (await context.unknown_faces(service)).search(queries, limit, since, until, source))


@router.post("/embeddings/sightings/search", response_model=SightingsSearchOut)
async def search_sightings_by_embedding(body: EmbeddingsBody, service: RecognitionService, context: Ctx,
                                        limit: int = Matches, since: datetime | None = Since,
                                        until: datetime | None = Until, source: Name | None = Source):
    """Per embedding, the past sightings most alike."""
    context.require_sightings(service)
    queries = embeddings_matrix(body.embeddings, "embeddings")
    return _matches_json(await (await context.unknown_faces(service)).search(queries, limit, since, until, source))
