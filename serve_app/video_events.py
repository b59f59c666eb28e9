"""Live video events for Server-Sent-Events clients: one PostgreSQL LISTEN per ingress replica.

Workers announce each stored event with NOTIFY (see :mod:`store.video_store`); the replica's
:class:`EventRelay` receives it on one dedicated connection and copies it to the queue of every
subscriber. A subscriber that falls :data:`QUEUE_LIMIT` events behind, or a lost LISTEN connection,
ends the subscription (``None`` in its queue): the client reconnects with ``Last-Event-ID`` and the
API replays what it missed from the table.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from serve_app.context import INGRESS_APPLICATION
from store.video_store import EVENTS_CHANNEL, StoredEvent

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000


class EventRelay:
    """Fans the NOTIFY channel out to subscriber queues."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._connection: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._subscribers: set[asyncio.Queue] = set()

    async def subscribe(self) -> asyncio.Queue:
        """A queue of :class:`StoredEvent` (None: the subscription ended); listening starts if needed."""
        async with self._lock:
            if self._connection is None or self._connection.is_closed():
                connection = await asyncpg.connect(self.dsn, server_settings={"application_name": INGRESS_APPLICATION})
                connection.add_termination_listener(self._on_lost)
                await connection.add_listener(EVENTS_CHANNEL, self._on_notify)
                self._connection = connection
        queue: asyncio.Queue = asyncio.Queue(QUEUE_LIMIT + 1)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)

    def _end(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)
        queue.put_nowait(None)

    def _on_notify(self, connection, pid: int, channel: str, payload: str) -> None:
        try:
            event = StoredEvent.from_payload(payload)
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring a malformed video event notification: %.200s", payload)
            return
        for queue in list(self._subscribers):
            if queue.qsize() >= QUEUE_LIMIT:
                log.warning("an event-stream client is %d events behind; closing its stream", QUEUE_LIMIT)
                self._end(queue)
            else:
                queue.put_nowait(event)

    def _on_lost(self, connection) -> None:
        log.warning("lost the video events LISTEN connection; closing %d event streams", len(self._subscribers))
        self._connection = None
        for queue in list(self._subscribers):
            self._end(queue)


_relay: EventRelay | None = None


def get_relay(dsn: str) -> EventRelay:
    """This replica's relay (one per process)."""
    global _relay
    if _relay is None or _relay.dsn != dsn:
        _relay = EventRelay(dsn)
    return _relay
