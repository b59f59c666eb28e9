"""Every error the API returns, as JSON ``{"message": ..., "code": ...}``, mapped in one place.

A client mistake is always a 4xx with a message that says what to fix; only a bug is a 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facecore.errors import (FaceError, ImageTooLarge, InvalidImage, NoFaceFound, TooManyPixels,
                             UnsupportedFormat)
from actors.index_shard import ShardFull
from store.errors import Conflict, NotFound

log = logging.getLogger(__name__)

# Application error codes (the "code" field). 28 is CompreFace's "no face is found".
BAD_PARAMETER = 1
NOT_FOUND = 5
CONFLICT = 9
INVALID_IMAGE = 11
UNSUPPORTED_FORMAT = 12
IMAGE_TOO_LARGE = 13
MISSING_API_KEY = 20
UNKNOWN_API_KEY = 21
WRONG_SERVICE_TYPE = 22
ADMIN_TOKEN_REQUIRED = 23
UNSUPPORTED_MEDIA_TYPE = 24
NO_FACE_FOUND = 28
RATE_LIMITED = 29
SHARD_FULL = 30
INTERNAL = 99


class ApiError(Exception):
    """An error response: HTTP status, message and application code."""

    def __init__(self, status: int, message: str, code: int):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _face_error_status(exc: FaceError) -> tuple[int, int]:
    if isinstance(exc, (ImageTooLarge, TooManyPixels)):
        return 413, IMAGE_TOO_LARGE
    if isinstance(exc, UnsupportedFormat):
        return 400, UNSUPPORTED_FORMAT
    if isinstance(exc, InvalidImage):
        return 400, INVALID_IMAGE
    if isinstance(exc, NoFaceFound):
        return 400, NO_FACE_FOUND
    return 400, BAD_PARAMETER


def error_response(status: int, message: str, code: int) -> JSONResponse:
    return JSONResponse(status_code=status, content={"message": message, "code": code})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body", "path", "header"))
        parts.append(f"{location or 'request'}: {error.get('msg', 'invalid value')}")
    return "invalid request: " + "; ".join(parts)


STORE_ERRORS = {NotFound: (404, NOT_FOUND), Conflict: (409, CONFLICT), ShardFull: (507, SHARD_FULL)}


def _fixed_status_handler(status: int, code: int):
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return error_response(status, str(exc), code)

    return handler


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code)

    @app.exception_handler(FaceError)
    async def face_error(_: Request, exc: FaceError) -> JSONResponse:
        status, code = _face_error_status(exc)
        return error_response(status, str(exc), code)

    for error_class, (status, code) in STORE_ERRORS.items():
        app.add_exception_handler(error_class, _fixed_status_handler(status, code))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(exc), BAD_PARAMETER)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), NOT_FOUND if exc.status_code == 404 else BAD_PARAMETER)

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(500, "internal error; the request was not processed", INTERNAL)
