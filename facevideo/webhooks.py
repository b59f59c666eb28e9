"""Webhook delivery of video events: JSON POSTs, signed, retried, in order.

Each POST carries the event JSON and three headers:

- ``X-Faces-Event-Id``: the event id (receivers de-duplicate on it: a retry after a lost response
  may deliver an event twice, never zero times while the receiver comes back within the retries);
- ``X-Faces-Timestamp``: Unix seconds of this attempt;
- ``X-Faces-Signature``: ``sha256=<hex>``, the HMAC-SHA256 with the stream's webhook secret of
  ``"<timestamp>." + body``; check it with :func:`verify_signature`, which also refuses a timestamp
  more than :data:`SIGNATURE_TOLERANCE_S` from the receiver's clock (a replayed old delivery).

A 2xx answer delivers the event; anything else (or no answer) is retried with exponential backoff,
up to ``attempts`` tries, then the event is logged as undelivered and the next one goes. With an
outbound policy, every connection is checked when it is made (:mod:`outbound.http`); a refused
receiver is not retried. The receiver's URL appears in logs with its credentials masked.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time

import httpx

from outbound import OutboundPolicy, OutboundRefused, redact
from outbound.http import CheckedTransport

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-Faces-Event-Id"
TIMESTAMP_HEADER = "X-Faces-Timestamp"
SIGNATURE_HEADER = "X-Faces-Signature"
QUEUE_LIMIT = 1000
SIGNATURE_TOLERANCE_S = 300
WEBHOOK_SCHEMES = frozenset({"http", "https"})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for this body and timestamp."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str,
                     tolerance_s: float = SIGNATURE_TOLERANCE_S, now: float | None = None) -> bool:
    """Whether ``signature`` is this body's signature with ``secret`` (constant-time comparison) and
    ``timestamp`` (Unix seconds) is within ``tolerance_s`` of ``now`` (default: the clock)."""
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookSender:
    """One receiver: queue events with :meth:`submit`; :meth:`run` delivers them one by one."""

    def __init__(self, url: str, secret: str, attempts: int = 5, backoff_s: float = 0.5, timeout_s: float = 5.0,
                 policy: OutboundPolicy | None = None):
        if not secret:
            raise ValueError("a webhook needs a secret to sign its deliveries")
        self.url = url
        self.name = redact(url)
        self.secret = secret
        self.policy = policy
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.delivered = 0
        self.failed = 0
        self._queue: asyncio.Queue[tuple[int, dict]] = asyncio.Queue(QUEUE_LIMIT)
        self._in_flight = 0

    @property
    def pending(self) -> int:
        """Events queued and not yet delivered or given up."""
        return self._queue.qsize() + self._in_flight

    def submit(self, event_id: int, event: dict) -> None:
        """Queue an event; when the receiver is far behind, the oldest queued one is dropped."""
        if self._queue.full():
            dropped, _ = self._queue.get_nowait()
            self.failed += 1
            log.warning("webhook %s is %d events behind; dropped event %d", self.name, QUEUE_LIMIT, dropped)
        self._queue.put_nowait((event_id, event))

    async def run(self) -> None:
        """Deliver queued events until cancelled."""
        transport = CheckedTransport(self.policy) if self.policy is not None else None
        async with httpx.AsyncClient(timeout=self.timeout_s, transport=transport) as client:
            while True:
                event_id, event = await self._queue.get()
                self._in_flight = 1
                delivered = await self.deliver(client, event_id, event)
                self._in_flight = 0
                if delivered:
                    self.delivered += 1
                else:
                    self.failed += 1
                    log.warning("webhook %s: event %d undelivered", self.name, event_id)

    async def deliver(self, client: httpx.AsyncClient, event_id: int, event: dict) -> bool:
        body = json.dumps(event).encode()
        for attempt in range(self.attempts):
            timestamp = str(int(time.time()))
            headers = {"content-type": "application/json", EVENT_ID_HEADER: str(event_id),
                       TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(self.secret, timestamp, body)}
            try:
                response = await client.post(self.url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return True
                log.info("webhook %s answered %d to event %d (attempt %d)", self.name, response.status_code,
                         event_id, attempt + 1)
            except OutboundRefused as exc:
                log.warning("webhook %s refused for event %d: %s", self.name, event_id, redact(str(exc)))
                if not exc.retry:
                    return False
            except httpx.HTTPError as exc:
                log.info("webhook %s failed for event %d (attempt %d): %s", self.name, event_id, attempt + 1,
                         redact(str(exc)))
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self.backoff_s * 2 ** attempt)
        return False
