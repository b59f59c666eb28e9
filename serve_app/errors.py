"""Every error the API returns, as JSON ``{"message": ..., "code": ...}``, mapped in one place.

A client mistake is always a 4xx with a message that says what to fix; an outage of a dependency
(PostgreSQL, an index shard, the embedder, Serve refusing more work, a bounded wait running out) is a
503 with ``Retry-After``; only a bug is a 500, logged, with a body that shows no exception text.
Errors raised inside Ray actors and tasks arrive wrapped (``RayTaskError``): they are unwrapped to
the error the actor raised, so that a shard's ``ShardFull`` is a 507 and no remote traceback reaches
a response body.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RayServeException
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from actors.index_shard import ShardUnavailable
from batch_jobs.errors import JobInputError
from facecore.errors import (FaceError, ImageTooLarge, InvalidImage, NoFaceFound, TooManyPixels,
                             UnsupportedFormat)
from faceindex.budget import ShardFull
from serve_app.ingress_error_page import RETRY_AFTER_S, UNAVAILABLE
from serve_app.validation import ROW_ID_RANGE
from store.errors import Conflict, InvalidValue, NotFound, StoreError

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
BODY_TOO_LARGE = 13  # the whole request body, like an image over its limit
QUOTA_EXCEEDED = 32
INTERNAL = 99


class ApiError(Exception):
    """An error response: HTTP status, message and application code."""

    def __init__(self, status: int, message: str, code: int, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers


class ServiceUnavailable(Exception):
    """A dependency of the request is down or did not answer in time; the message says which."""


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


def error_response(status: int, message: str, code: int, headers: dict[str, str] | None = None) -> JSONResponse:
    if headers is None and status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(status_code=status, content={"message": message, "code": code}, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body", "path", "header"))
        parts.append(f"{location or 'request'}: {error.get('msg', 'invalid value')}")
    return "invalid request: " + "; ".join(parts)


def _validation_error(exc: RequestValidationError) -> tuple[int, str, int]:
    """400, except an id beyond 64 bits in the path: it names nothing, so 404."""
    for error in exc.errors():
        if error.get("type") == ROW_ID_RANGE and error.get("loc", ("",))[0] == "path":
            return 404, f"not found: {error.get('msg')}", NOT_FOUND
    return 400, _validation_message(exc), BAD_PARAMETER


# PostgreSQL unreachable or refusing connections: asyncpg's connection errors (class 08, a connection
# lost included), a server shutting down or starting (57P), too many connections (53300), and the
# client-side protocol error of a pooled connection whose server went away in the middle of a query
# ("cannot switch to state ...; another operation is in progress"). Its socket refusing or missing (a
# stopped server) is an OSError, below.
POSTGRES_DOWN = (asyncpg.PostgresConnectionError, asyncpg.exceptions.CannotConnectNowError,
                 asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CrashShutdownError,
                 asyncpg.exceptions.TooManyConnectionsError, asyncpg.exceptions._base.InternalClientError)
# A Ray actor (an index shard, a job runner) dead, restarting or unreachable; an object lost with its
# node; Serve with no replica to take the request (the embedder dead or full); a request's shard calls
# out of time.
RAY_DOWN = (RayActorError, ObjectLostError, GetTimeoutError, BackPressureError, DeploymentUnavailableError,
            ShardUnavailable)
# Stored text that PostgreSQL refuses (a NUL character slipped through), or a number out of its range.
POSTGRES_BAD_VALUE = (asyncpg.exceptions.CharacterNotInRepertoireError,
                      asyncpg.exceptions.UntranslatableCharacterError,
                      asyncpg.exceptions.NumericValueOutOfRangeError, asyncpg.exceptions._base.DataError)


def unwrap(exc: BaseException) -> BaseException:
    """The error an actor or task raised, without Ray's wrapper (and its remote traceback)."""
    while isinstance(exc, RayTaskError) and exc.cause is not None and exc.cause is not exc:
        exc = exc.cause
    return exc


def classify(exc: BaseException) -> tuple[int, str, int]:
    """``(status, message, code)`` of any exception a request can raise: the one mapping of the API."""
    exc = unwrap(exc)
    if isinstance(exc, ApiError):
        return exc.status, exc.message, exc.code
    if isinstance(exc, FaceError):
        status, code = _face_error_status(exc)
        return status, str(exc), code
    if isinstance(exc, NotFound):
        return 404, str(exc), NOT_FOUND
    if isinstance(exc, Conflict):
        return 409, str(exc), CONFLICT
    if isinstance(exc, (InvalidValue, JobInputError)):
        return 400, str(exc), BAD_PARAMETER
    if isinstance(exc, ShardFull):
        return 507, str(exc), SHARD_FULL
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, str(exc.detail), NOT_FOUND if exc.status_code == 404 else BAD_PARAMETER
    if isinstance(exc, ClientDisconnect):
        return 400, "the client closed the connection before the request body was complete", BAD_PARAMETER
    if isinstance(exc, POSTGRES_BAD_VALUE):
        return 400, "a value of the request cannot be stored: text with a NUL character or a number out of " \
                    "range", BAD_PARAMETER
    if isinstance(exc, ServiceUnavailable):
        return 503, str(exc), UNAVAILABLE
    if isinstance(exc, POSTGRES_DOWN):
        return 503, "the control-plane database is unavailable; try again shortly", UNAVAILABLE
    if isinstance(exc, RAY_DOWN):
        return 503, "a backend of the service (index shard or embedder) is unavailable; try again shortly", \
            UNAVAILABLE
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return 503, "a dependency of the service did not answer in time; try again shortly", UNAVAILABLE
    if isinstance(exc, OSError):  # connection refused or reset, a database socket gone
        return 503, "a dependency of the service is unreachable; try again shortly", UNAVAILABLE
    return 500, "internal error; the request was not processed", INTERNAL


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    status, message, code = classify(exc)
    if status == 500:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=unwrap(exc))
    elif status == 503:
        log.warning("dependency unavailable on %s %s: %r", request.method, request.url.path, unwrap(exc))
    cause = unwrap(exc)
    return error_response(status, message, code, cause.headers if isinstance(cause, ApiError) else None)


# Every family :func:`classify` knows. ``Exception`` stays last: Starlette answers it outside the
# routing layer and re-raises it, so that a bug also shows in Serve's own logs.
HANDLED = (ApiError, FaceError, StoreError, ShardFull, JobInputError, RequestValidationError,
           StarletteHTTPException, ClientDisconnect, ServiceUnavailable, asyncpg.PostgresError, asyncpg.InterfaceError,
           RayError, RayServeException, ShardUnavailable, OSError)


def install_error_handlers(app: FastAPI) -> None:
    for error_class in (*HANDLED, Exception):
        app.add_exception_handler(error_class, _handle)
