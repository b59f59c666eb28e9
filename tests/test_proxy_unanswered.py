"""Serve's proxy layer for requests it leaves unanswered (a replica lost mid-request): the API's JSON
503 with Retry-After; answers the application started pass unchanged. Driven as ASGI, in process; the
multi-node tests (tests/test_multi_node.py) kill a node under load behind Serve's real proxy."""

from __future__ import annotations

import asyncio
import json

import pytest

from serve_app.body_limits import proxy_middlewares
from serve_app.ingress_error_page import RETRY_AFTER_S, UNAVAILABLE
from serve_app.proxy_unanswered import AnswerUnanswered


def _call(app, scope_type: str = "http") -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": scope_type, "method": "POST", "path": "/api/v1/recognition/recognize", "headers": []}
    asyncio.run(AnswerUnanswered(app)(scope, receive, send))
    return sent


def _status_headers_body(sent: list[dict]) -> tuple[int, dict, dict]:
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    return sent[0]["status"], dict(sent[0]["headers"]), json.loads(sent[1]["body"])


async def _silent(scope, receive, send):
    """What Serve's proxy does when the replica holding the request dies: sends nothing, returns."""


async def _raising(scope, receive, send):
    raise RuntimeError("lost")


@pytest.mark.parametrize("app", [_silent, _raising])
def test_an_unanswered_request_gets_the_apis_503_with_retry_after(app):
    status, headers, body = _status_headers_body(_call(app))
    assert status == 503 and headers[b"retry-after"] == str(RETRY_AFTER_S).encode()
    assert headers[b"content-type"] == b"application/json"
    assert body["code"] == UNAVAILABLE and "try again" in body["message"]


def test_an_answer_the_application_started_passes_unchanged():
    async def own_error(scope, receive, send):
        await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"message": "its own", "code": 1}'})

    assert _status_headers_body(_call(own_error)) == (500, {b"content-type": b"application/json"},
                                                     {"message": "its own", "code": 1})

    async def failing_after_start(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-body")

    with pytest.raises(RuntimeError, match="mid-body"):
        _call(failing_after_start)


def test_other_connections_pass_through_and_the_proxy_gets_the_layer():
    assert _call(_silent, "lifespan") == []
    assert [middleware.cls for middleware in proxy_middlewares()][0] is AnswerUnanswered
