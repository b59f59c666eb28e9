"""The one mapping of exceptions to HTTP answers (serve_app/errors.py), on the errors a dying dependency raises."""

from __future__ import annotations

import asyncpg
import pytest
from ray.exceptions import ActorDiedError

from serve_app.errors import INTERNAL, UNAVAILABLE, classify


@pytest.mark.parametrize("error", [
    # a pooled connection whose server went away in the middle of a query (seen when PostgreSQL stops)
    asyncpg.exceptions._base.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ConnectionRefusedError(111, "Connection refused"),
    ActorDiedError(),
])
def test_an_outage_is_a_503(error):
    status, message, code = classify(error)
    assert (status, code) == (503, UNAVAILABLE)
    assert "try again" in message


def test_a_bug_stays_a_500_without_its_text():
    status, message, code = classify(ZeroDivisionError("secret detail"))
    assert (status, code) == (500, INTERNAL)
    assert "secret" not in message
