"""No operation of the live API answers a caller without credentials, except the few named public ones.

Each route checks its own caller (the admin routes take a ``Caller`` that may be the admin token, a
session, or nothing at all), so a route added without that check would be open: this test lists every
operation from the running platform's OpenAPI document and calls each one with no credential.
"""

from __future__ import annotations

import re

import httpx

# Operations a caller without credentials may reach: health, the first-start and login forms.
PUBLIC = {
    ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"),
    ("post", "/api/v1/auth/login"), ("post", "/api/v1/auth/logout"), ("get", "/api/v1/auth/setup"),
    ("post", "/api/v1/auth/setup"), ("get", "/api/v1/auth/me"),
}
REFUSED = {401, 403}


def _operations(server) -> list[tuple[str, str]]:
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    return [(method, path) for path, methods in document["paths"].items() for method in methods
            if method in ("get", "post", "put", "patch", "delete")]


def test_every_operation_but_the_public_ones_refuses_a_caller_without_credentials(server):
    operations = _operations(server)
    assert len(operations) > 40, operations  # the document lists the whole API
    open_routes = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for method, path in operations:
            if (method, path) in PUBLIC:
                continue
            concrete = re.sub(r"\{[^}]+\}", "1", path)
            answer = http.request(method.upper(), concrete, json={} if method != "get" else None)
            if answer.status_code not in REFUSED:
                open_routes.append((method, path, answer.status_code))
    assert not open_routes, f"answered without credentials: {open_routes}"


def test_a_public_operation_that_is_not_in_the_api_would_be_noticed(server):
    """The public list names only operations that exist, so a renamed route cannot hide behind it."""
    operations = set(_operations(server))
    assert {operation for operation in PUBLIC if operation not in operations} <= {("get", "/metrics")}
