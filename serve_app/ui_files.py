"""The web UI's files (``serve_app/ui``: plain HTML, CSS and JavaScript modules), served at ``/ui``.

Every answer carries a strict Content-Security-Policy: scripts, styles and connections only from the
platform itself (no inline script, nothing from a CDN), images also from ``blob:`` URLs (face crops
fetched with the session), and no framing.
"""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parent / "ui"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


class UiFiles(StaticFiles):
    """Static files with the UI's security headers; ``/ui/`` answers with ``index.html``."""

    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers.update(SECURITY_HEADERS)
        return response


def ui_files() -> UiFiles:
    return UiFiles(directory=UI_DIR, html=True)
