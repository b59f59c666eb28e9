"""Recognition service: faces (examples) of subjects, 1:N recognition, 1:1 verification by face id."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Body, Depends, Query, Request, Response

from actors.face_batch import SubjectSearch
from facecore.context_crop import thumbnail_jpeg
from facecore.similarity import similarity_from_cosine
from serve_app.api.params import DetProbThreshold, FacePlugins, Limit, PredictionCount, Status, Threshold
from serve_app.auth import recognition_service
from serve_app.context import AppContext, request_context
from serve_app.errors import BAD_PARAMETER, QUOTA_EXCEEDED, ApiError
from serve_app.face_requests import analyze_image, embeddings_matrix
from serve_app.plugins import execution_time, face_json, parse_plugins, plugins_versions
from serve_app.schemas import Deleted, EmbeddingsBody, FaceRef, FacesPage
from serve_app.uploads import image_request_body, read_images
from serve_app.validation import FilterName, Name
from store.control import Service
from store.errors import NotFound
from store.faces import FaceRecord

router = APIRouter(prefix="/api/v1/recognition", tags=["recognition"])
Ctx = Annotated[AppContext, Depends(request_context)]
RecognitionService = Annotated[Service, Depends(recognition_service)]


def _threshold(context: AppContext, value: float | None) -> float:
    return context.settings.det_prob_threshold if value is None else value


@router.post("/faces", response_model=FaceRef, openapi_extra=image_request_body("file"))
async def add_face(request: Request, service: RecognitionService, context: Ctx,
                   subject: Name | None = Query(None, description="who the face belongs to"),
                   det_prob_threshold: float | None = DetProbThreshold):
    """Add an example of a subject: the largest face of the image is enrolled."""
    if subject is None:
        raise ApiError(400, "query parameter 'subject' is required (1-255 characters)", BAD_PARAMETER)
    name = subject
    await check_faces_quota(context, service)
    image = (await read_images(request, ("file",), context.settings.max_upload_bytes))["file"]
    response = await analyze_image(context, image, _threshold(context, det_prob_threshold), limit=1, crops=True,
                                   model=service.model)
    face, crop = response.faces[0], response.crops[0]
    record = FaceRecord(face_id=str(uuid.uuid4()), subject=name, embedding=face.embedding,
                        model=response.model, crop=crop, source=None,
                        created_at=datetime.now(timezone.utc))
    await (await context.gallery(service)).add_faces([record])
    return FaceRef(image_id=record.face_id, subject=name)


async def check_faces_quota(context: AppContext, service: Service) -> None:
    """403 once the service holds its quota of faces (concurrent adds may pass it by a few)."""
    limit = (await context.service_quotas(service.id)).faces
    if await context.shards(service).count() >= limit:
        raise ApiError(403, f"this service holds its quota of {limit} faces; delete faces or ask the "
                            "administrator for a larger quota", QUOTA_EXCEEDED)


async def check_sightings_quota(context: AppContext, service: Service) -> None:
    """403 once the service holds its quota of sightings (counted every few seconds per replica, so
    concurrent requests may pass it by a few)."""
    limit = (await context.service_quotas(service.id)).sightings
    store = await context.quota_store()
    if await context.sighting_usage.get(service.id, lambda: store.sightings(service.id)) >= limit:
        raise ApiError(403, f"this service holds its quota of {limit} sightings; recognize without "
                            "remember_unknowns, or ask the administrator for a larger quota", QUOTA_EXCEEDED)


@router.get("/faces", response_model=FacesPage)
async def list_faces(service: RecognitionService, context: Ctx,
                     page: int = Query(0, ge=0), size: int = Query(20, ge=1, le=1000),
                     subject: FilterName | None = Query(None)):
    rows, total = await context.shards(service).list_faces(subject or None, page * size, size)
    return FacesPage(faces=[FaceRef(image_id=i, subject=s) for i, s in rows], page_number=page, page_size=size,
                     total_pages=-(-total // size), total_elements=total)


@router.delete("/faces", response_model=Deleted)
async def delete_faces(service: RecognitionService, context: Ctx, subject: FilterName | None = Query(None)):
    """Delete every face of ``subject``, or every face of the service when no subject is given."""
    gallery = await context.gallery(service)
    if subject:
        return Deleted(deleted=await gallery.delete_faces_of(subject))
    return Deleted(deleted=await gallery.delete_all_faces())


@router.delete("/faces/{image_id}", response_model=FaceRef)
async def delete_face(image_id: str, service: RecognitionService, context: Ctx):
    deleted = await (await context.gallery(service)).delete_faces([image_id])
    if not deleted:
        raise NotFound(f"face '{image_id}' not found")
    return FaceRef(image_id=deleted[0][0], subject=deleted[0][1])


@router.post("/faces/delete", response_model=list[FaceRef])
async def delete_faces_by_id(service: RecognitionService, context: Ctx,
                             image_ids: list[str] = Body(..., min_length=1, max_length=10000)):
    """Delete several faces by id; unknown ids are skipped. Returns the faces deleted."""
    deleted = await (await context.gallery(service)).delete_faces(image_ids)
    return [FaceRef(image_id=i, subject=s) for i, s in deleted]


@router.get("/faces/{image_id}/img", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the aligned face crop"}})
async def face_image(image_id: str, service: RecognitionService, context: Ctx):
    record = await context.shards(service).get_face(image_id)
    if record is None:
        raise NotFound(f"face '{image_id}' not found")
    return Response(content=thumbnail_jpeg(record.crop), media_type="image/jpeg")


def _subject_matches(matches: list[tuple[str, float, str]], threshold: float,
                     model: str) -> tuple[list[dict], bool]:
    scored = [{"subject": subject, "similarity": round(float(similarity_from_cosine(cosine, model)), 5)}
              for subject, cosine, _ in matches]
    kept = [m for m in scored if m["similarity"] >= threshold]
    return kept, not kept


@router.post("/recognize", openapi_extra=image_request_body("file"))
async def recognize(request: Request, service: RecognitionService, context: Ctx,
                    limit: int = Limit, det_prob_threshold: float | None = DetProbThreshold,
                    prediction_count: int = PredictionCount, face_plugins: str | None = FacePlugins,
                    status: bool = Status, threshold: float | None = Threshold,
                    remember_unknowns: bool = Query(False, description="store every face as a sighting; faces of "
                                                    "no subject join (or start) identities of unknown faces"),
                    source: Name | None = Query(None, description="where the image comes from (a camera, a "
                                                "request id), recorded with its sightings; default a new id")):
    """Who is each face of the image? Subjects below the similarity threshold are not named: the
    face is reported ``unknown`` instead. With ``remember_unknowns`` each face is also remembered as
    a sighting (``sighting``: its id and identity of unknown faces, if any)."""
    plugins = parse_plugins(face_plugins)
    if remember_unknowns:
        context.require_sightings(service)
        await check_sightings_quota(context, service)
    image = (await read_images(request, ("file",), context.settings.max_upload_bytes))["file"]
    response = await analyze_image(context, image, _threshold(context, det_prob_threshold), limit=limit,
                                   quality=remember_unknowns or "quality" in plugins, crops=remember_unknowns,
                                   search=SubjectSearch(service.id, service.shards, prediction_count,
                                                        service.shard_replicas, service.model),
                                   model=service.model)
    cutoff = context.recognition_threshold(service) if threshold is None else threshold
    timings = execution_time(response.timings)
    result = []
    for face, face_matches in zip(response.faces, response.matches):
        item = face_json(face, plugins, timings)
        item["subjects"], item["unknown"] = _subject_matches(face_matches, cutoff, service.model)
        result.append(item)
    if remember_unknowns:
        subjects = [None if item["unknown"] else item["subjects"][0]["subject"] for item in result]
        sightings = await (await context.unknown_faces(service)).remember(
            response.faces, response.crops, subjects, source or f"request:{uuid.uuid4()}",
            response.model, context.recognition_threshold(service))
        context.sighting_usage.add(service.id, len(sightings))
        for item, sighting in zip(result, sightings):
            item["sighting"] = {"id": sighting.id, "identity": sighting.identity}
    body = {"result": result}
    if status:
        body["plugins_versions"] = plugins_versions(await context.model_versions(service), plugins)
    return body


@router.post("/faces/{image_id}/verify", openapi_extra=image_request_body("file"))
async def verify_face(image_id: str, request: Request, service: RecognitionService, context: Ctx,
                      limit: int = Limit, det_prob_threshold: float | None = DetProbThreshold,
                      face_plugins: str | None = FacePlugins, status: bool = Status):
    """Similarity of each face of the image to the stored face ``image_id``."""
    plugins = parse_plugins(face_plugins)
    shards = context.shards(service)
    if await shards.get_face(image_id) is None:
        raise NotFound(f"face '{image_id}' not found")
    image = (await read_images(request, ("file",), context.settings.max_upload_bytes))["file"]
    response = await analyze_image(context, image, _threshold(context, det_prob_threshold), limit=limit,
                                   quality="quality" in plugins, model=service.model)
    queries = np.stack([face.embedding for face in response.faces])
    cosines = await shards.similarity_to(image_id, queries)
    timings = execution_time(response.timings)
    result = [{**face_json(face, plugins, timings),
               "similarity": round(float(similarity_from_cosine(c, service.model)), 5)}
              for face, c in zip(response.faces, cosines)]
    body = {"result": result}
    if status:
        body["plugins_versions"] = plugins_versions(await context.model_versions(service), plugins)
    return body


@router.post("/embeddings/recognize")
async def recognize_embeddings(body: EmbeddingsBody, service: RecognitionService, context: Ctx,
                               prediction_count: int = PredictionCount, threshold: float | None = Threshold):
    """1:N search for embeddings computed elsewhere (e.g. by the calculator plugin)."""
    queries = embeddings_matrix(body.embeddings, "embeddings", service.model)
    cutoff = context.recognition_threshold(service) if threshold is None else threshold
    matches = await context.shards(service).search_subjects(queries, prediction_count)
    result = []
    for embedding, face_matches in zip(body.embeddings, matches):
        similarities, unknown = _subject_matches(face_matches, cutoff, service.model)
        result.append({"embedding": embedding, "similarities": similarities, "unknown": unknown})
    return {"result": result}


@router.post("/embeddings/faces/{image_id}/verify")
async def verify_embeddings(image_id: str, body: EmbeddingsBody, service: RecognitionService, context: Ctx):
    queries = embeddings_matrix(body.embeddings, "embeddings", service.model)
    cosines = await context.shards(service).similarity_to(image_id, queries)
    if cosines is None:
        raise NotFound(f"face '{image_id}' not found")
    return {"result": [{"embedding": e, "similarity": round(float(similarity_from_cosine(c, service.model)), 5)}
                       for e, c in zip(body.embeddings, cosines)]}
