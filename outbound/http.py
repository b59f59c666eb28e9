"""An httpx transport that connects only where the outbound policy allows, checked at connect time.

The host of every new connection is resolved and checked right before connecting, and the
connection goes to the checked address (TLS still verifies the host name): a name that resolves
to a public address when a URL is given and to an internal one later (DNS rebinding) is refused.
Environment proxies are not used (a proxy would make the connection on its own terms).
"""

from __future__ import annotations

import asyncio

import httpcore
import httpx

from outbound.policy import OutboundPolicy


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: OutboundPolicy):
        self._policy = policy
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = await asyncio.to_thread(self._policy.check_host, host, port)  # OutboundRefused
        return await self._backend.connect_tcp(addresses[0], port, timeout=timeout, local_address=local_address,
                                               socket_options=socket_options)

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("unix sockets are not outbound destinations")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncClient(transport=CheckedTransport(policy))``: a connection to a refused host
    raises :class:`outbound.OutboundRefused` from the request."""

    def __init__(self, policy: OutboundPolicy):
        super().__init__(trust_env=False)
        # httpx builds its connection pool without a way to pass a network backend: build it here.
        self._pool = httpcore.AsyncConnectionPool(ssl_context=httpx.create_ssl_context(trust_env=False),
                                                  network_backend=_CheckedBackend(policy))
