"""What the commands that talk to a running platform share: its HTTP client, and errors as messages."""

from __future__ import annotations

import argparse
import sys

from faces_settings import get_settings


def api_client(args: argparse.Namespace):
    """A client of the platform at ``--url`` with ``--api-key`` or the admin token."""
    from serve_app.client import FaceClient

    settings = get_settings()
    url = args.url or f"http://{settings.host}:{settings.port}"
    return FaceClient(url, api_key=args.api_key, admin_token=getattr(args, "admin_token", None) or settings.admin_token)


def api_call(function) -> int:
    """Run ``function``; an error answer of the API is printed, exit status 1."""
    from serve_app.client import FaceApiError

    try:
        function()
    except FaceApiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0
