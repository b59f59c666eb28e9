"""Open a video source through the platform's own connection to the checked address.

Programs that connect on their own (FFmpeg) resolve names again and follow what servers tell them.
:class:`Relay` resolves and checks the source's host, connects to the checked address itself, and
hands FFmpeg a URL on a loopback port of its own (RTSP: exactly one connection, FFmpeg's; HTTP: one
connection to the same address for each of FFmpeg's, which opens one per seek), passing bytes both
ways. It serves two cases:

- **RTSP redirects.** FFmpeg's RTSP client follows a ``3xx`` answer (to OPTIONS, DESCRIBE or SETUP)
  to its ``Location`` on its own, and no option turns that off: a camera on an allowed host could
  send it to loopback or a metadata address. For ``rtsp(s)`` the relay reads the server's messages
  as they pass (RTSP heads with their bodies, ``$``-framed interleaved packets: sources are read
  over TCP): an answer with a ``3xx`` status, or a ``REDIRECT`` request from the server, is not
  passed on; the relay closes both sides and keeps the location in :attr:`Relay.redirect`.
  :func:`open_relayed` then checks that location like the first and opens it through a fresh relay
  (:data:`MAX_REDIRECTS` at most), or refuses.
- **TLS with the host's name.** A TLS connection FFmpeg makes to an address sends no server name
  (SNI), so a server hosting several names cannot pick the right one. For ``rtsps`` and ``https``
  the relay makes the TLS connection, with the name as SNI, and FFmpeg speaks plain ``rtsp`` or
  ``http`` to it. Certificates are not verified, as FFmpeg does not verify them by default
  (cameras carry self-signed ones).

The server sees the relay's loopback address in RTSP request URLs (FFmpeg names the URL it was given;
rewriting them would break Digest authentication, which signs them), as it saw the checked address
before: cameras route by path. HTTP's ``Host`` header is the caller's to send.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

from outbound.policy import OutboundPolicy, OutboundRefused
from outbound.redact import redact

log = logging.getLogger(__name__)

RTSP_SCHEMES = ("rtsp", "rtsps")
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
_PLAIN = {"rtsp": "rtsp", "rtsps": "rtsp", "http": "http", "https": "http"}
_TLS = ("rtsps", "https")
MAX_REDIRECTS = 5
MAX_HEAD_BYTES = 64 * 1024
PUBLIC_REDIRECT = "the source redirects to a location that cannot be opened"
T = TypeVar("T")
_COPY_BYTES = 64 * 1024


class Relay:
    """One relayed connection to an ``rtsp``, ``rtsps``, ``http`` or ``https`` URL: :meth:`open`
    (blocking) connects to the checked address and returns the loopback URL FFmpeg opens;
    :meth:`close` ends both sides. After FFmpeg failed on an RTSP source, :attr:`redirect` holds the
    absolute URL the server redirected to (``""``: it named none), if it did."""

    def __init__(self, url: str, policy: OutboundPolicy, timeout: float):
        self.url = url
        self.policy = policy
        self.timeout = timeout
        self.redirect: str | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"rtsp-relay:{redact(url)}", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    def open(self) -> str:
        """Check the host and connect to it (:class:`OutboundRefused`, :class:`OSError`); the URL for
        FFmpeg: plain ``rtsp://`` or ``http://`` on the relay's loopback port, with the source's
        credentials, path and query."""
        parts = urlsplit(self.url)
        scheme = parts.scheme.lower()
        port = parts.port or DEFAULT_PORTS[scheme]
        address = self.policy.check_host(parts.hostname or "", port)[0]
        self._thread.start()
        try:
            local_port = asyncio.run_coroutine_threadsafe(
                self._start(address, port, parts.hostname if scheme in _TLS else None, scheme in RTSP_SCHEMES),
                self._loop
            ).result(timeout=self.timeout + 5)
        except BaseException as exc:
            self.close()
            if isinstance(exc, OSError) and exc.errno:  # asyncio's text names no reason
                raise OSError(exc.errno, os.strerror(exc.errno)) from None
            raise
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (f"{userinfo}@" if userinfo else "") + f"127.0.0.1:{local_port}"
        return urlunsplit((_PLAIN[scheme], netloc, parts.path, parts.query, ""))

    def close(self) -> None:
        """Close both connections and the loopback port; idempotent."""
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=5)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _start(self, address: str, port: int, server_name: str | None, rtsp: bool) -> int:
        tls = None
        if server_name is not None:
            tls = ssl.create_default_context()
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            upstream = await asyncio.wait_for(asyncio.open_connection(
                address, port, ssl=tls, server_hostname=server_name, limit=MAX_HEAD_BYTES), self.timeout)
            self._writers.append(upstream[1])
            return upstream

        ready = [await connect()]  # the first connection is made now, so that a failure is FFmpeg's to see

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
            if rtsp:  # RTSP over TCP: one connection, FFmpeg's
                self._server.close()
            try:  # http(s): FFmpeg opens a connection per request (a seek in a file): each to the same address
                upstream = ready.pop() if ready else await connect()
            except OSError:
                writer.close()
                return
            await self._relay((reader, writer), upstream, rtsp)

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _relay(self, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                     upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter], rtsp: bool) -> None:
        requests = asyncio.ensure_future(_copy(client[0], upstream[1]))
        answers = asyncio.ensure_future((self._check_answers if rtsp else _copy)(upstream[0], client[1]))
        try:
            await asyncio.wait({requests, answers}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (requests, answers):
                task.cancel()
            for writer in (client[1], upstream[1]):
                writer.close()

    async def _check_answers(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Pass the server's messages on until one redirects (kept in :attr:`redirect`) or the
        connection ends or breaks the protocol."""
        try:
            while True:
                first = await reader.readexactly(1)
                if first == b"$":  # interleaved packet: channel (1 byte), length (2 bytes), data
                    header = await reader.readexactly(3)
                    writer.write(first + header + await reader.readexactly(int.from_bytes(header[1:], "big")))
                else:
                    head = first + await reader.readuntil(b"\r\n\r\n")
                    location = _redirect_location(head)
                    if location is not None:
                        self.redirect = urljoin(self.url, location) if location else ""
                        log.info("%s: the RTSP server redirects to %s", redact(self.url), redact(self.redirect))
                        return
                    writer.write(head + await reader.readexactly(_content_length(head)))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            return


def open_relayed(url: str, policy: OutboundPolicy, *, admin: bool, timeout: float,
                 opener: Callable[[str], T]) -> tuple[T, Relay]:
    """``opener(local_url)`` through a relay to an RTSP ``url``'s checked address; when it fails because the
    server redirected, the location is checked like ``url`` and opened through a fresh relay.
    Returns what ``opener`` returned and the relay to close after it. Raises what ``opener`` raised,
    :class:`OutboundRefused` (a refused location, a redirect without one, too many) or :class:`OSError`
    (the server cannot be reached)."""
    for _ in range(MAX_REDIRECTS + 1):
        policy.check(url, RTSP_SCHEMES, admin=admin)
        relay = Relay(url, policy, timeout)
        local = relay.open()
        try:
            return opener(local), relay
        except Exception:
            relay.close()
            if relay.redirect is None:
                raise
            if not relay.redirect:
                raise OutboundRefused(f"{redact(url)}: the RTSP server redirects without a location",
                                      PUBLIC_REDIRECT) from None
            url = relay.redirect
    raise OutboundRefused(f"{redact(url)}: more than {MAX_REDIRECTS} redirects", PUBLIC_REDIRECT)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_COPY_BYTES):
            writer.write(data)
            await writer.drain()
    except OSError:  # either side went away: the relay ends
        return



def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _redirect_location(head: bytes) -> str | None:
    """For a message that redirects (a ``3xx`` answer or a ``REDIRECT`` request) the location it
    names (``""``: none), else None."""
    start = head.split(b"\r\n", 1)[0].split()
    if not start:
        raise ValueError("an empty RTSP start line")
    answer = start[0].upper().startswith(b"RTSP/")
    if answer and not (len(start) > 1 and start[1][:1] == b"3"):
        return None
    if not answer and start[0].upper() != b"REDIRECT":
        return None
    location = _header(head, b"location")
    return location.decode("latin-1") if location else ""


def _content_length(head: bytes) -> int:
    value = _header(head, b"content-length")
    length = int(value) if value else 0
    if length < 0:
        raise ValueError("a negative Content-Length")
    return length
