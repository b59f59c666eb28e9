"""Verification service: is the face of a source image in a target image (1:1)?"""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request

from facecore.similarity import similarity_from_cosine
from serve_app.api.params import DetProbThreshold, FacePlugins, Limit, Status
from serve_app.auth import verification_service
from serve_app.context import AppContext, request_context
from serve_app.face_requests import analyze_image, embeddings_matrix
from serve_app.plugins import execution_time, face_json, parse_plugins, plugins_versions
from serve_app.schemas import EmbeddingsVerifyBody
from serve_app.uploads import image_request_body, read_images
from store.control import Service

router = APIRouter(prefix="/api/v1/verification", tags=["verification"])
Ctx = Annotated[AppContext, Depends(request_context)]
VerificationService = Annotated[Service, Depends(verification_service)]


@router.post("/verify", openapi_extra=image_request_body("source_image", "target_image"))
async def verify(request: Request, service: VerificationService, context: Ctx,
                 limit: int = Limit, det_prob_threshold: float | None = DetProbThreshold,
                 face_plugins: str | None = FacePlugins, status: bool = Status):
    """Similarity of the largest face of ``source_image`` to every face of ``target_image``."""
    plugins = parse_plugins(face_plugins)
    images = await read_images(request, ("source_image", "target_image"), context.settings.max_upload_bytes)
    threshold = context.settings.det_prob_threshold if det_prob_threshold is None else det_prob_threshold
    source, target = await asyncio.gather(
        analyze_image(context, images["source_image"], threshold, limit=1, quality="quality" in plugins,
                      model=service.model),
        analyze_image(context, images["target_image"], threshold, limit=limit, quality="quality" in plugins,
                      model=service.model))
    source_face = source.faces[0]
    cosines = np.stack([face.embedding for face in target.faces]) @ source_face.embedding
    target_times = execution_time(target.timings)
    matches = [{**face_json(face, plugins, target_times),
                "similarity": round(float(similarity_from_cosine(c, service.model)), 5)}
               for face, c in zip(target.faces, cosines)]
    matches.sort(key=lambda match: -match["similarity"])
    body = {"result": [{"source_image_face": face_json(source_face, plugins, execution_time(source.timings)),
                        "face_matches": matches}]}
    if status:
        body["plugins_versions"] = plugins_versions(await context.model_versions(service), plugins)
    return body


@router.post("/embeddings/verify")
async def verify_embeddings(body: EmbeddingsVerifyBody, service: VerificationService):
    source = embeddings_matrix(body.source, "source", service.model)[0]
    targets = embeddings_matrix(body.targets, "targets", service.model)
    cosines = targets @ source
    result = [{"embedding": target, "similarity": round(float(similarity_from_cosine(c, service.model)), 5)}
              for target, c in zip(body.targets, cosines)]
    result.sort(key=lambda item: -item["similarity"])
    return {"result": result}
