"""Detection service: faces of an image with the requested plugins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from serve_app.api.params import DetProbThreshold, FacePlugins, Limit, Status
from serve_app.auth import detection_service
from serve_app.context import AppContext, request_context
from serve_app.face_requests import analyze_image
from serve_app.plugins import execution_time, face_json, needs_embedding, parse_plugins, plugins_versions
from serve_app.uploads import image_request_body, read_images
from store.control import Service

router = APIRouter(prefix="/api/v1/detection", tags=["detection"])


@router.post("/detect", openapi_extra=image_request_body("file"))
async def detect(request: Request, service: Annotated[Service, Depends(detection_service)],
                 context: Annotated[AppContext, Depends(request_context)],
                 limit: int = Limit, det_prob_threshold: float | None = DetProbThreshold,
                 face_plugins: str | None = FacePlugins, status: bool = Status):
    plugins = parse_plugins(face_plugins)
    image = (await read_images(request, ("file",), context.settings.max_upload_bytes))["file"]
    threshold = context.settings.det_prob_threshold if det_prob_threshold is None else det_prob_threshold
    response = await analyze_image(context, image, threshold, limit=limit, embed=needs_embedding(plugins),
                                   quality="quality" in plugins, model=service.model)
    timings = execution_time(response.timings)
    body = {"result": [face_json(face, plugins, timings) for face in response.faces]}
    if status:
        body["plugins_versions"] = plugins_versions(await context.model_versions(service), plugins)
    return body
