"""Credentials masked out of URLs and of any text that quotes them (log lines, error messages).

Masked: the user information of a URL (``rtsp://user:password@host`` -> ``rtsp://***@host``) and the
values of query parameters whose names say they hold a secret (``token``, ``key``, ``sig``,
``signature``, ``password``, ``secret``, ``credential``, ``auth`` anywhere in the name, any case:
``?token=``, ``api_key=``, ``X-Amz-Signature=``, ``secret_key=``...).
"""

from __future__ import annotations

import re

MASK = "***"
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#]*@")
_SECRET_PARAMETER = re.compile(
    r"(?P<name>[?&;][^=&#\s]*(?:token|key|sig|password|passwd|pwd|secret|credential|auth)[^=&#\s]*)=[^&#\s'\"]*",
    re.IGNORECASE)


def redact(text: str | None) -> str | None:
    """``text`` with every URL credential masked; None stays None."""
    if not text:
        return text
    text = _USERINFO.sub(lambda match: f"{match.group('scheme')}{MASK}@", text)
    return _SECRET_PARAMETER.sub(lambda match: f"{match.group('name')}={MASK}", text)
