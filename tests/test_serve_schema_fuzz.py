"""Schemathesis against the live platform's /openapi.json: no request, however malformed, gets a 5xx.

Each service type is fuzzed with its own key on its own routes, in an application of this test's
own, and the admin token on the admin routes that change nothing (fuzzed writes with random ids
would delete or re-key other tests' services on the shared server). Stream creation (a worker per
random source) and the endless SSE stream are left out; the examples per operation are bounded so
that the whole run stays within a few minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MAX_EXAMPLES = 15
RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def keys(server, admin):
    application = admin.create_application("test-schema-fuzz")
    return {kind: admin.create_service(application["id"], f"fuzz-{kind}", kind)["api_key"]
            for kind in ("recognition", "detection", "verification", "video")}


# One worker: with two threads, hypothesis parses lambdas with `ast` concurrently, which CPython 3.11 does
# not support (gh-106905: "AST constructor recursion depth mismatch" fails a case at random).
def _schemathesis(server, tmp_path: Path, header: str, *filters: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "st"), "run", f"{server.url}/openapi.json",
               "-H", header, "-c", "not_a_server_error", "--max-examples", str(MAX_EXAMPLES),
               "--phases", "examples,fuzzing", "--mode", "all", "--seed", "1", "--no-shrink", "--workers", "1",
               "--request-timeout", "60", "--generation-database", "none",
               "--exclude-path-regex", "/events/stream$", "--report-dir", str(tmp_path), "--no-color", *filters]
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env={**os.environ, "NO_COLOR": "1"})


@pytest.mark.parametrize("kind, filters", [
    ("recognition", ("--include-path-regex", "^/api/v1/recognition/")),
    ("detection", ("--include-path-regex", "^/api/v1/detection/")),
    ("verification", ("--include-path-regex", "^/api/v1/verification/")),
    ("video", ("--include-path-regex", "^/api/v1/video/", "--exclude-method", "POST")),
    # reads only: schemathesis joins two include filters with "or" (a path of these, or any GET), so the
    # writes are excluded instead
    ("admin", ("--include-path-regex", "^/(api/v1/admin/|api/v1/video/|healthz|readyz|metrics)",
               *(option for method in ("POST", "PUT", "PATCH", "DELETE") for option in ("--exclude-method", method)))),
    ("auth", ("--include-path-regex", "^/api/v1/auth/")),
])
def test_no_server_errors(server, keys, tmp_path, kind, filters):
    header = f"x-admin-token: {server.admin_token}" if kind in ("admin", "auth") else f"x-api-key: {keys[kind]}"
    result = _schemathesis(server, tmp_path, header, *filters)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[:8000]
    assert "Server error" not in output, output[-6000:]
