"""Bounded request bodies: an ASGI layer in front of routing, authentication and parsing.

Each request gets the limit of its route class: routes that take images (multipart files or base64
in JSON) may carry their images plus multipart overhead; every other route a small JSON body
(``FACES_MAX_JSON_BYTES``). A declared ``Content-Length`` over the limit is answered 413 at once,
before a byte of the body is read; a body without one (chunked) is counted as it streams in and
answered 413 as soon as it passes the limit. The application behind sees the request end as a client
disconnect, and never a byte past the limit. The 413's status line goes out at once; before its body
ends the answer and closes the connection, what the client is still sending is read and dropped, for
at most ``DRAIN_BYTES`` or ``DRAIN_SECONDS`` (a lingering close): a server that closes a connection
with unread bytes resets it, and the client's kernel then drops the part of the answer the client has
not read yet (a client that sends its whole body before reading saw a 413's headers without its body).

Serve's own HTTP proxy (when requests go through it rather than HAProxy) reads each body ahead into
memory as fast as the client sends it, so the proxy gets the same layer too, through Serve's
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` hook (:func:`proxy_middlewares`), with one limit for
every route: the largest that any route takes (``FACES_PROXY_MAX_BODY_BYTES``, set by the platform).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable

from starlette.middleware import Middleware
from starlette.routing import compile_path

from faces_settings import Settings
from serve_app.context import get_context
from serve_app.errors import BODY_TOO_LARGE
from serve_app.proxy_unanswered import AnswerUnanswered
from serve_app.uploads import image_fields, image_upload_limit

# After a 413's status line, the most of the refused body read and dropped before the answer ends
DRAIN_BYTES = 32 * 2**20
DRAIN_SECONDS = 3.0


def _image_routes(openapi: dict) -> list[tuple[re.Pattern, str, int]]:
    """``(path pattern, method, number of images)`` of every operation of the API that takes images."""
    found = []
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            if fields := image_fields(operation):
                found.append((compile_path(path)[0], method.upper(), len(fields)))
    return found


PROXY_LIMIT_ENV = "FACES_PROXY_MAX_BODY_BYTES"
PROXY_CALLBACK_ENV = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_app.body_limits.proxy_middlewares"}


def largest_body(max_upload_bytes: int, max_json_bytes: int) -> int:
    """The largest body any route takes: two images (verification) or a JSON body."""
    return max(image_upload_limit(2, max_upload_bytes), max_json_bytes)


class RouteLimits:
    """The body limit of a request's route: images plus overhead, or ``max_json_bytes``."""

    def __init__(self, openapi: Callable[[], dict]):
        self._openapi = openapi
        self._image_routes: list[tuple[re.Pattern, str, int]] | None = None

    def __call__(self, scope) -> int:
        if self._image_routes is None:
            self._image_routes = _image_routes(self._openapi())
        settings = get_context().settings
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        for pattern, method, images in self._image_routes:
            if scope["method"] == method and pattern.match(path):
                return image_upload_limit(images, settings.max_upload_bytes)
        return settings.max_json_bytes


class BodyLimits:
    """ASGI middleware refusing request bodies over ``limit_for(scope)`` bytes with 413 (see module doc)."""

    def __init__(self, app, limit_for: Callable[[dict], int]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, receive, limit)
            return
        received = 0
        refused = responded = False

        async def limited_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not responded:
                        await _refuse(send, receive if message.get("more_body") else None, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal responded
            if refused:
                return  # the 413 was the answer
            responded = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise


def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _refuse(send, receive, limit: int) -> None:
    """Answer 413; ``receive``: the rest of the body to drop before the answer ends (None: none left)."""
    body = json.dumps({"message": f"the request body is larger than {limit} bytes, the limit of this endpoint",
                       "code": BODY_TOO_LARGE}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    if receive is not None:
        await _drop_the_rest(receive)
    await send({"type": "http.response.body", "body": body})


async def _drop_the_rest(receive) -> None:
    """Read and drop the body the client is still sending, for at most ``DRAIN_BYTES`` or
    ``DRAIN_SECONDS`` (see the module doc)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_SECONDS
    dropped = 0
    while dropped <= DRAIN_BYTES:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        dropped += len(message.get("body", b""))


def proxy_middlewares() -> list[Middleware]:
    """Serve's HTTP proxy callback: the API's 503 for a request the proxy leaves unanswered (a replica
    lost, :mod:`serve_app.proxy_unanswered`), and the body limit in the proxy, before a body is read ahead."""
    if PROXY_LIMIT_ENV in os.environ:
        limit = int(os.environ[PROXY_LIMIT_ENV])
    else:  # a cluster started with `ray start`: the FACES_* settings of the proxy's environment
        settings = Settings()
        limit = largest_body(settings.max_upload_bytes, settings.max_json_bytes)
    return [Middleware(AnswerUnanswered), Middleware(BodyLimits, limit_for=lambda scope: limit)]
