"""Connect to the address the policy checked, not to a name resolved again (DNS rebinding).

A program handed a URL with a host name (FFmpeg) resolves the name itself, after the policy resolved
and checked it: a name with a short TTL can answer a public address to the check and a loopback or
metadata address to the program. :func:`pin` resolves and checks the host once and returns the URL
naming the checked address instead, with the host as given for what must keep naming it: HTTP's
``Host`` header (the caller sends it). RTSP and RTMP carry no such header: their servers see the
address in the URL, as they do from any camera client configured by address. A TLS connection to an
address sends no server name (SNI).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from outbound.policy import OutboundPolicy, hosts


@dataclass(frozen=True)
class Pinned:
    """``url``: the URL with the checked address for its host; ``authority``: ``host[:port]`` as the
    URL gave them (what HTTP's ``Host`` header carries)."""

    url: str
    authority: str


def pin(url: str, policy: OutboundPolicy) -> Pinned:
    """Resolve and check the URL's host (:class:`outbound.OutboundRefused`), and name its first
    checked address in the URL instead."""
    ((host, port),) = hosts(url)
    address = policy.check_host(host, port)[0]
    literal = f"[{address}]" if ":" in address else address
    parts = urlsplit(url)
    userinfo, _, authority = parts.netloc.rpartition("@")
    netloc = (f"{userinfo}@" if userinfo else "") + literal + (f":{port}" if port is not None else "")
    return Pinned(urlunsplit(parts._replace(netloc=netloc)), authority)
