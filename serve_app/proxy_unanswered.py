"""Serve's HTTP proxy's unanswered requests made the API's: a JSON 503 with ``Retry-After``, never a 500.

When the ingress replica that holds a request dies (its node lost, its process killed), Ray Serve
2.60's Python proxy (the ingress when ``FACES_HAPROXY=false``, and on KubeRay) gets the replica's
``RayActorError``, sends nothing, and returns; its HTTP server then answers a plain-text
``500 Internal Server Error``. This ASGI layer, installed in the proxy by Serve's
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` hook (:func:`serve_app.body_limits.proxy_middlewares`),
answers such a request as HAProxy's error page does (:mod:`serve_app.ingress_error_page`). An
answer the application started (its own errors included) passes unchanged.
"""

from __future__ import annotations

import logging

from serve_app.ingress_error_page import RETRY_AFTER_S, error_body

log = logging.getLogger(__name__)


class AnswerUnanswered:
    """ASGI middleware: a 503 for an HTTP request that the app behind leaves without an answer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await self._answered(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _answered(self, scope, receive, send):
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            if started:
                raise
            log.exception("the proxy failed on %s %s before answering", scope["method"], scope["path"])
        if not started:
            await _unavailable(send)


async def _unavailable(send) -> None:
    body = error_body()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(RETRY_AFTER_S).encode()), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
