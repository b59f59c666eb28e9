"""Video sources through PyAV (FFmpeg): open, decode, sample to a frame-rate limit, classify failures.

Anything FFmpeg opens works: a file path, ``rtsp://``, ``http(s)://`` MJPEG or HLS, ``rtmp://``...
A *file* source has media timestamps and an end; a *live* source is timed by the wall clock (MJPEG
over HTTP carries no real timestamps) and has no end: when it stops, it dropped.

Failures are :class:`SourceError` with ``permanent`` set for what retrying cannot fix (not a video,
corrupt data, unknown protocol, access denied, a location the outbound policy refuses) and clear for
what may pass (connection refused or reset, file not found, timeouts, an HTTP 404 or 5xx, a host name
that does not resolve): the stream worker reconnects after the latter and gives up after the former.
Their messages name the source with its credentials masked.

With an :class:`outbound.OutboundPolicy`, a source is checked right before each time it is opened
(its host resolved again), and FFmpeg may use only the protocols of its scheme (an HLS playlist of an
``http`` source cannot make it read a local file). FFmpeg follows HTTP redirects and playlist entries
to hosts it does not check, so for an ``http(s)`` source the redirects are followed here first, each
hop checked (:func:`outbound.redirects.final_location`), and FFmpeg gets the final URL with its own
redirect following off (``max_redirects=0``); a tenant's source may only be a single-resource
container (:data:`TENANT_HTTP_FORMATS`): playlists (HLS, DASH, concat) name further URLs on any host
and are refused. FFmpeg connects to the address the policy checked last, not to the name, which it
would resolve again (:func:`outbound.pinning.pin`; http(s) keeps the name in its ``Host`` header).
FFmpeg's RTSP client follows ``3xx`` answers with no option to stop it, so an ``rtsp(s)`` source goes
through the platform's own connection to the checked address (:mod:`outbound.relay`), which stops a
redirect before FFmpeg sees it and has its location checked and opened like the source's; ``https``
and ``rtsps`` go through such a relay too, which makes the TLS connection with the host's name as
SNI (FFmpeg connecting to an address would send none).

:class:`FrameReader` runs the blocking decode loop on a thread and hands frames to asyncio code.
In ``realtime`` mode it plays files at their own pace and keeps only the newest frame when the
consumer falls behind, like a camera would; otherwise it hands over every sampled frame.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import av
import av.error
import httpx
import numpy as np

from facevideo.config import SOURCE_SCHEMES, file_path, is_file_source
from outbound import OutboundPolicy, OutboundRefused, redact
from outbound.pinning import authority, pin
from outbound.redirects import HTTP_SCHEMES, final_location
from outbound.relay import RTSP_SCHEMES, Relay, open_relayed

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 10.0
MAX_BAD_PACKETS = 25

_TRANSIENT = (av.error.EOFError, av.error.ExitError, av.error.HTTPServerError, av.error.HTTPNotFoundError,
              av.error.HTTPTooManyRequestsError)
_PERMANENT_OS = (av.error.PermissionError, av.error.IsADirectoryError, av.error.NotADirectoryError)
# The protocols FFmpeg may use for a source of each scheme (files: only files; streams: no files).
_PROTOCOLS = {"file": "file", "http": "http,https,tcp,tls,crypto", "https": "http,https,tcp,tls,crypto",
              "rtsp": "rtsp,rtsps,rtp,srtp,tcp,udp,tls", "rtsps": "rtsp,rtsps,rtp,srtp,tcp,udp,tls",
              "rtmp": "rtmp,rtmps,tcp,tls", "udp": "udp,rtp", "srt": "srt"}
# The demuxers FFmpeg may pick for a tenant's http(s) source: containers that read one resource only.
TENANT_HTTP_FORMATS = ("mpjpeg,mjpeg,jpeg_pipe,mov,mp4,matroska,webm,flv,live_flv,mpegts,avi,h264,hevc,"
                       "mpegvideo,mpeg,ivf,nut,ogg,asf,rawvideo")


class SourceError(Exception):
    """The source cannot be read. ``permanent``: retrying will not help."""

    def __init__(self, message: str, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


def classify(exc: Exception, url: str) -> SourceError:
    """Turn a PyAV/OS exception into a :class:`SourceError` with a readable reason (``url``: the
    source's name as it may be shown, credentials masked)."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if isinstance(exc, av.error.InvalidDataError):
        return SourceError(f"{url}: not a readable video (invalid data: {reason})", permanent=True)
    if isinstance(exc, _PERMANENT_OS):
        return SourceError(f"{url}: {reason}", permanent=True)
    if isinstance(exc, (OSError, *_TRANSIENT)):
        return SourceError(f"{url}: {reason}", permanent=False)
    if isinstance(exc, av.error.ProtocolNotFoundError):
        return SourceError(f"{url}: FFmpeg has no protocol for this URL", permanent=True)
    return SourceError(f"{url}: {reason}", permanent=True)


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``time`` in seconds since the source opened, ``image`` BGR uint8 (H, W, 3)."""

    index: int
    time: float
    image: np.ndarray


class FrameSampler:
    """Keeps frames at most ``max_fps`` per second of source time (0: every frame)."""

    def __init__(self, max_fps: float):
        self.period = 1.0 / max_fps if max_fps > 0 else 0.0
        self.next_time: float | None = None

    def keep(self, t: float) -> bool:
        if self.period == 0.0:
            return True
        if self.next_time is not None and t + 1e-6 < self.next_time:
            return False
        due = t if self.next_time is None else self.next_time
        # Keep the cadence, but after a gap (or a slow start) restart it from this frame.
        self.next_time = due + self.period if t - due < self.period else t + self.period
        return True


def _open(url: str, policy: OutboundPolicy | None, admin: bool, open_timeout: float,
          read_timeout: float) -> tuple[av.container.InputContainer, Relay | None]:
    """Open the source in FFmpeg; with a relay to close after it where one stands between them.

    With a policy, the location is checked first; ``rtsp(s)`` opens through relays that check its
    redirects (:func:`outbound.relay.open_relayed`); ``http(s)`` follows its redirects here, each
    checked, and opens the final URL at its checked address (``https``: through a relay that speaks
    TLS with the host's name; ``http``: the address in the URL), the name as given in ``Host``.
    Without a policy, the file path or URL as given. Failures: :class:`SourceError`."""
    scheme = _scheme(url)
    options = _ffmpeg_options(scheme, policy, admin)

    def open_container(location: str) -> av.container.InputContainer:
        return av.open(location, options=options, timeout=(open_timeout, read_timeout))

    try:
        if policy is None:
            return open_container(file_path(url) if is_file_source(url) else url), None
        target = policy.check(url, SOURCE_SCHEMES, admin=admin)
        if scheme in RTSP_SCHEMES:
            return open_relayed(target, policy, admin=admin, timeout=open_timeout, opener=open_container)
        if scheme in HTTP_SCHEMES:
            target = final_location(target, policy, admin=admin, timeout=open_timeout)
            options["headers"] = f"Host: {authority(target)}\r\n"
        if _scheme(target) == "https":
            relay = Relay(target, policy, open_timeout)
            try:
                return open_container(relay.open()), relay
            except BaseException:
                relay.close()
                raise
        if scheme == "file":
            return open_container(target), None
        return open_container(pin(target, policy)), None  # FFmpeg connects to the checked address
    except OutboundRefused as exc:
        raise SourceError(f"{redact(url)}: {redact(str(exc))}", permanent=not exc.retry) from None
    except httpx.HTTPError as exc:
        raise SourceError(f"{redact(url)}: {redact(str(exc)) or type(exc).__name__}", permanent=False) from None
    except Exception as exc:
        raise classify(exc, redact(url)) from None


def _scheme(url: str) -> str:
    return "file" if is_file_source(url) else url.split("://", 1)[0].lower()


def _ffmpeg_options(scheme: str, policy: OutboundPolicy | None, admin: bool) -> dict[str, str]:
    """FFmpeg's options for a source: RTSP over TCP; with a policy, the scheme's protocols only, no
    redirects followed by FFmpeg, and for a tenant's http(s) source no playlist formats."""
    options = {"rtsp_transport": "tcp"} if scheme.startswith("rtsp") else {}
    if policy is None:
        return options
    if scheme in _PROTOCOLS:
        options["protocol_whitelist"] = _PROTOCOLS[scheme]
    if scheme in HTTP_SCHEMES:
        options["max_redirects"] = "0"
        if not admin:
            options["format_whitelist"] = TENANT_HTTP_FORMATS
    return options


class VideoSource:
    """One opened source; iterate :meth:`frames` on one thread, then :meth:`close`.

    ``policy``: check the source against it first (``admin``: the stream is the admin's, so a local
    file under the file roots is allowed).
    """

    def __init__(self, url: str, max_fps: float = 0.0, open_timeout: float = OPEN_TIMEOUT_S,
                 read_timeout: float = READ_TIMEOUT_S, policy: OutboundPolicy | None = None, admin: bool = True):
        self.url = redact(url)
        self.is_file = is_file_source(url)
        self.sampler = FrameSampler(max_fps)
        self.decoded = 0
        self.container, self._relay = _open(url, policy, admin, open_timeout, read_timeout)
        if not self.container.streams.video:
            self.close()
            raise SourceError(f"{self.url}: has no video stream", permanent=True)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.nominal_fps = float(rate) if rate else 25.0
        self.opened_at = time.monotonic()

    def _frame_time(self, frame: av.VideoFrame, first: list[float]) -> float:
        if not self.is_file:
            return time.monotonic() - self.opened_at
        media = frame.time if frame.time is not None else self.decoded / self.nominal_fps
        if not first:
            first.append(media)
        return max(0.0, media - first[0])

    def frames(self) -> Iterator[Frame]:
        """Sampled frames until the end of a file; raises :class:`SourceError` when reading fails.

        A live source that ends raises a transient error (it dropped). Undecodable packets are
        skipped; :data:`MAX_BAD_PACKETS` in a row fail the source as corrupt.
        """
        first: list[float] = []
        bad = 0
        try:
            for packet in self.container.demux(self.stream):
                try:
                    decoded = packet.decode()
                    bad = 0
                except av.error.InvalidDataError as exc:
                    bad += 1
                    if bad >= MAX_BAD_PACKETS:
                        raise SourceError(f"{self.url}: corrupt video data ({exc})", permanent=True) from None
                    continue
                for frame in decoded:
                    t = self._frame_time(frame, first)
                    self.decoded += 1
                    if self.sampler.keep(t):
                        yield Frame(self.decoded - 1, t, frame.to_ndarray(format="bgr24"))
        except SourceError:
            raise
        except Exception as exc:
            raise classify(exc, self.url) from None
        if not self.is_file:
            raise SourceError(f"{self.url}: the stream ended", permanent=False)

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # closing a broken container must not mask the original error
            log.debug("closing %s failed", self.url, exc_info=True)
        if self._relay is not None:
            self._relay.close()


_END = object()


class FrameReader:
    """Decode a source on a thread; ``await next()`` gives the next frame, or None at the end.

    ``realtime``: files are played at their own pace and, when the consumer falls more than
    :data:`REALTIME_BACKLOG` frames behind the source, the oldest frames are dropped (``dropped``
    counts them): short hiccups cost latency, a sustained overload costs frames. Otherwise every
    sampled frame is delivered, as fast as the consumer takes them (the decoder waits when
    :data:`READ_AHEAD` frames are ready). Errors of the source are raised by :meth:`next`. Items are handed over with
    ``call_soon_threadsafe`` and only touched on the event loop: a waiting consumer holds no thread.
    ``policy`` and ``admin``: as for :class:`VideoSource`, checked each time the source is opened.
    """

    READ_AHEAD = 4
    REALTIME_BACKLOG = 3

    def __init__(self, url: str, max_fps: float, realtime: bool, policy: OutboundPolicy | None = None,
                 admin: bool = True):
        self.url = url
        self.max_fps = max_fps
        self.realtime = realtime
        self.policy, self.admin = policy, admin
        self.dropped = 0
        self._items: collections.deque = collections.deque()
        self._ready: asyncio.Event | None = None
        self._opened: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = threading.Semaphore(self.READ_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reader:{redact(url)}", daemon=True)

    async def start(self) -> None:
        """Open the source (raises :class:`SourceError`) and start decoding."""
        self._loop = asyncio.get_running_loop()
        self._ready, self._opened = asyncio.Event(), asyncio.Event()
        self._thread.start()
        await self._opened.wait()
        if self._items and isinstance(self._items[0], SourceError):
            raise self._items.popleft()

    async def next(self) -> Frame | None:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if item is _END:
            return None
        if isinstance(item, Exception):
            raise item
        if not self.realtime:
            self._slots.release()
        return item

    def stop(self) -> None:
        """Stop decoding; a consumer waiting in :meth:`next` gets None."""
        self._stop.set()
        self._slots.release()
        self._send(_END)

    def _put(self, item, latest: bool = False) -> None:
        """On the loop: append ``item``; ``latest`` first drops the oldest frames beyond the backlog."""
        while latest and len(self._items) >= self.REALTIME_BACKLOG and isinstance(self._items[0], Frame):
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    def _send(self, item, latest: bool = False) -> None:
        try:
            self._loop.call_soon_threadsafe(self._put, item, latest)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self._stop.set()

    def _wait_for_slot(self) -> bool:
        while not self._stop.is_set():
            if self._slots.acquire(timeout=0.2):
                return not self._stop.is_set()
        return False

    def _run(self) -> None:
        try:
            source = VideoSource(self.url, self.max_fps, policy=self.policy, admin=self.admin)
        except SourceError as exc:
            self._send(exc)
            return
        finally:
            self._loop.call_soon_threadsafe(self._opened.set)
        started = time.monotonic()
        try:
            for frame in source.frames():
                if self._stop.is_set():
                    break
                if not self.realtime:
                    if not self._wait_for_slot():
                        break
                    self._send(frame)
                    continue
                if source.is_file:
                    delay = started + frame.time - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                self._send(frame, latest=True)
            self._send(_END)
        except SourceError as exc:
            self._send(exc)
        except Exception as exc:  # a bug here must reach the consumer, not die with the thread
            log.exception("reading %s failed", redact(self.url))
            self._send(SourceError(redact(f"{self.url}: {exc}"), permanent=False))
        finally:
            source.close()
