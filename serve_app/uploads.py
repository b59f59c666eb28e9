"""Reading images from requests: multipart form fields or base64 in a JSON body, like CompreFace."""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import Request

from serve_app.errors import BAD_PARAMETER, IMAGE_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, ApiError

MULTIPART_OVERHEAD = 64 * 1024


def image_upload_limit(images: int, max_image_bytes: int) -> int:
    """The largest body carrying ``images`` images of ``max_image_bytes``: as base64 in JSON (4/3 of
    the bytes) or as multipart files, with room for the rest of the body."""
    return images * (max_image_bytes * 4 // 3 + 4) + MULTIPART_OVERHEAD


def image_fields(operation: dict) -> list[str]:
    """The image fields of an OpenAPI operation described by :func:`image_request_body` (none for others)."""
    content = (operation.get("requestBody") or {}).get("content", {})
    return list(content.get("multipart/form-data", {}).get("schema", {}).get("required", []))


def image_request_body(*fields: str) -> dict:
    """OpenAPI description of a body carrying image ``fields`` as files or base64 strings."""
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": list(fields),
                                           "properties": {f: {"type": "string", "format": "binary"} for f in fields}}},
        "application/json": {"schema": {"type": "object", "required": list(fields),
                                        "properties": {f: {"type": "string", "format": "base64"} for f in fields}}},
    }}}


def _decode_base64(value, field: str) -> bytes:
    if not isinstance(value, str):
        raise ApiError(400, f"field '{field}' must be a base64 string", BAD_PARAMETER)
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"field '{field}' is not valid base64", BAD_PARAMETER) from None


async def read_images(request: Request, fields: tuple[str, ...], max_bytes: int) -> dict[str, bytes]:
    """The named image fields of a multipart or JSON request, as bytes (the body's size is bounded in
    front of the routes, by :mod:`serve_app.body_limits`)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    images: dict[str, bytes] = {}
    if content_type == "multipart/form-data":
        try:
            form = await request.form()
        except Exception as exc:  # malformed multipart
            raise ApiError(400, f"malformed multipart body: {exc}", BAD_PARAMETER) from None
        for field in fields:
            part = form.get(field)
            if part is None:
                raise ApiError(400, f"missing form field '{field}' with the image", BAD_PARAMETER)
            images[field] = await part.read() if hasattr(part, "read") else str(part).encode()
    elif content_type == "application/json":
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "the JSON body is malformed", BAD_PARAMETER) from None
        if not isinstance(body, dict):
            raise ApiError(400, "the JSON body must be an object", BAD_PARAMETER)
        for field in fields:
            if field not in body:
                raise ApiError(400, f"missing JSON field '{field}' with the base64 image", BAD_PARAMETER)
            images[field] = _decode_base64(body[field], field)
    else:
        raise ApiError(415, f"content type '{content_type or 'none'}' is not supported: send multipart/form-data "
                            f"with field(s) {', '.join(fields)} or application/json with base64 strings",
                       UNSUPPORTED_MEDIA_TYPE)
    for field, data in images.items():
        if len(data) > max_bytes:
            raise ApiError(413, f"image '{field}' is {len(data)} bytes; the limit is {max_bytes} bytes", IMAGE_TOO_LARGE)
    return images
