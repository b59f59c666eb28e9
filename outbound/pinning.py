"""Connect to the address the policy checked, not to a name resolved again (DNS rebinding).

A program handed a URL with a host name (FFmpeg) resolves the name itself, after the policy resolved
and checked it: a name with a short TTL can answer a public address to the check and a loopback or
metadata address to the program. :func:`pin` resolves and checks the host once and returns the URL
naming the checked address instead, with the host as given for what must keep naming it: HTTP's
``Host`` header (the caller sends it; :func:`authority`). RTMP carries no such header: its servers
see the address in the URL, as they do from any camera client configured by address. A TLS
connection to an address sends no server name (SNI): video sources over TLS and RTSP go through
:mod:`outbound.relay` instead.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from outbound.policy import OutboundPolicy, hosts


def pin(url: str, policy: OutboundPolicy) -> str:
    """Resolve and check the URL's host (:class:`outbound.OutboundRefused`), and name its first
    checked address in the URL instead."""
    ((host, port),) = hosts(url)
    address = policy.check_host(host, port)[0]
    literal = f"[{address}]" if ":" in address else address
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + literal + (f":{port}" if port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def authority(url: str) -> str:
    """``host[:port]`` as the URL gives them, credentials left out (what HTTP's ``Host`` header carries)."""
    return urlsplit(url).netloc.rpartition("@")[2]
