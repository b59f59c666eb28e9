"""The web UI's owner, shared by its test modules, and a logged-in HTTP client for the UI's API.

The session's platform starts without users. ``test_ui_browser`` creates the owner through the
first-start page (it runs first, by name); a module run on its own creates it through the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

OWNER_EMAIL = "owner@example.org"
OWNER_PASSWORD = "owner-password-1"


def ensure_owner(url: str, admin_token: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        if client.get("/api/v1/auth/setup").json()["needs_owner"]:
            response = client.post("/api/v1/auth/setup", json={"admin_token": admin_token, "email": OWNER_EMAIL,
                                                              "password": OWNER_PASSWORD})
            assert response.status_code == 201, response.text


@contextmanager
def session_client(url: str, email: str, password: str) -> Iterator[httpx.Client]:
    """An HTTP client logged in as ``email``, sending the session's CSRF token with every request.

    The session cookie is Secure, which httpx's cookie jar keeps from plain-HTTP requests, so the
    cookie is sent as a header instead.
    """
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        client.headers["x-csrf-token"] = response.json()["csrf_token"]
        client.headers["cookie"] = f"faces_session={response.cookies['faces_session']}"
        yield client
