"""Follow an http(s) URL's redirects ourselves, each hop checked by the outbound policy.

Programs that fetch a URL on their own (FFmpeg for video sources) follow ``Location`` headers to
hosts nobody checked: a source on an allowed host could send them to loopback or a metadata address.
:func:`final_location` asks the URL's server with redirects off, checks every ``Location`` it is
sent to against the policy before connecting there, and returns the first URL that answers without
a redirect: the caller hands that one to the program, with the program's own redirect following
turned off. The answer's body is not read (a camera's stream never ends). Certificates are not
verified, as FFmpeg does not verify them by default (cameras carry self-signed ones): this check
decides where FFmpeg may go, and every place it may go is checked by the policy.
"""

from __future__ import annotations

from urllib.parse import urljoin

import httpx

from outbound.policy import OutboundPolicy, OutboundRefused
from outbound.redact import redact

HTTP_SCHEMES = ("http", "https")
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def final_location(url: str, policy: OutboundPolicy, *, admin: bool, timeout: float) -> str:
    """The URL that answers without a redirect, every hop checked first (:class:`OutboundRefused`);
    :class:`httpx.HTTPError` when a server cannot be reached."""
    with httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout, verify=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            policy.check(url, HTTP_SCHEMES, admin=admin)
            with client.stream("GET", url) as answer:
                location = answer.headers.get("location")
                if answer.status_code not in _REDIRECTS or not location:
                    return url
            url = urljoin(url, location.strip())
    raise OutboundRefused(f"{redact(url)}: more than {MAX_REDIRECTS} redirects",
                          f"the URL redirects more than {MAX_REDIRECTS} times")
