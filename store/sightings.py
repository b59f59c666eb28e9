"""Sightings of a recognition service's faces and the identities of its unknown faces (PostgreSQL).

A sighting is one face seen by ``recognize`` with ``remember_unknowns``: when, where (``source``: a
request or stream id), its box, quality, the subject it matched (or None) and, when it matched none,
the identity of unknowns it was assigned to (or None: a poor shot that seeded nothing). Identity ids
are chosen by the service's identity keeper (:mod:`actors.identity_keeper`); this module records them.

Errors: :class:`~store.errors.NotFound` for an identity or sighting the service does not have.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import numpy as np

from store.errors import NotFound


@dataclass
class Sighting:
    id: str
    seen_at: datetime
    source: str
    box: dict
    quality: float
    subject: str | None
    identity: int | None


@dataclass
class NewSighting(Sighting):
    embedding: np.ndarray


@dataclass
class IdentitySummary:
    id: int
    sightings: int
    first_seen: datetime
    last_seen: datetime
    best_sighting: str
    sources: list[str]
    ignored: bool


_SIGHTING_COLUMNS = "id::text AS id, seen_at, source, box, quality, subject, identity_id"
_SUMMARY = (
    "SELECT i.id, i.ignored, count(s.id) AS sightings, min(s.seen_at) AS first_seen, max(s.seen_at) AS last_seen, "
    "(array_agg(s.id::text ORDER BY s.quality DESC, s.seen_at))[1] AS best_sighting, "
    "(array_agg(DISTINCT s.source))[1:20] AS sources "
    "FROM unknown_identities i JOIN sightings s ON s.service_id = i.service_id AND s.identity_id = i.id "
    "WHERE i.service_id = $1 AND i.promoted_to IS NULL AND i.merged_into IS NULL {where} GROUP BY i.id, i.ignored")

_PAGE_OF_IDENTITIES = (
    "SELECT i.id FROM unknown_identities i JOIN sightings s ON s.service_id = i.service_id AND s.identity_id = i.id "
    "WHERE i.service_id = $1 AND i.promoted_to IS NULL AND i.merged_into IS NULL AND i.ignored = $2 "
    "GROUP BY i.id ORDER BY max(s.seen_at) DESC, i.id OFFSET $3 LIMIT $4")


def _sighting(row: asyncpg.Record) -> Sighting:
    return Sighting(id=row["id"], seen_at=row["seen_at"], source=row["source"], box=json.loads(row["box"]),
                    quality=float(row["quality"]), subject=row["subject"], identity=row["identity_id"])


def _summary(row: asyncpg.Record) -> IdentitySummary:
    return IdentitySummary(id=row["id"], sightings=row["sightings"], first_seen=row["first_seen"],
                           last_seen=row["last_seen"], best_sighting=row["best_sighting"],
                           sources=sorted(row["sources"]), ignored=row["ignored"])


class SightingStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def add(self, service_id: int, sightings: list[NewSighting]) -> None:
        """Record sightings (and the identities they seeded) in one transaction."""
        identities = sorted({s.identity for s in sightings if s.identity is not None})
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.executemany(
                "INSERT INTO unknown_identities (service_id, id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [(service_id, identity) for identity in identities])
            await connection.executemany(
                "INSERT INTO sightings (service_id, id, seen_at, source, box, quality, subject, identity_id, "
                "embedding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                [(service_id, uuid.UUID(s.id), s.seen_at, s.source, json.dumps(s.box), s.quality, s.subject,
                  s.identity, np.asarray(s.embedding, np.float32).tobytes()) for s in sightings])

    async def assigned(self, service_id: int) -> tuple[np.ndarray, np.ndarray, int, list[int]]:
        """What an identity keeper loads: the embeddings and identities of the sightings of live
        identities, the next free id, and the ignored identities."""
        rows = await self.pool.fetch(
            "SELECT s.embedding, s.identity_id FROM sightings s JOIN unknown_identities i "
            "ON i.service_id = s.service_id AND i.id = s.identity_id "
            "WHERE s.service_id = $1 AND i.promoted_to IS NULL", service_id)
        vectors = np.frombuffer(b"".join(row["embedding"] for row in rows), np.float32)
        identities = np.array([row["identity_id"] for row in rows], np.int64)
        last = await self.pool.fetchval("SELECT coalesce(max(id), 0) FROM unknown_identities WHERE service_id = $1",
                                        service_id)
        ignored = await self.pool.fetch("SELECT id FROM unknown_identities WHERE service_id = $1 AND ignored "
                                        "AND promoted_to IS NULL AND merged_into IS NULL", service_id)
        return vectors, identities, int(last) + 1, [row["id"] for row in ignored]

    async def unknown_history(self, service_id: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Every sighting of no subject (what a re-clustering groups), oldest first: ids, embeddings,
        qualities, and identities (``-1``: none)."""
        rows = await self.pool.fetch("SELECT id::text AS id, embedding, quality, coalesce(identity_id, -1) AS identity "
                                     "FROM sightings WHERE service_id = $1 AND subject IS NULL ORDER BY seen_at, id",
                                     service_id)
        vectors = np.frombuffer(b"".join(row["embedding"] for row in rows), np.float32)
        return ([row["id"] for row in rows], vectors, np.array([row["quality"] for row in rows], np.float32),
                np.array([row["identity"] for row in rows], np.int64))

    async def relabel(self, service_id: int, ids: list[str], identities: list[int | None]) -> int:
        """Give sightings ``ids`` the ``identities`` (None: none) in one transaction, recording new
        identities; returns how many sightings changed. An identity left without sightings keeps its
        row (its id is not given again) and is no longer listed."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.executemany(
                "INSERT INTO unknown_identities (service_id, id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [(service_id, identity) for identity in sorted({i for i in identities if i is not None})])
            status = await connection.execute(
                "UPDATE sightings s SET identity_id = v.identity FROM unnest($2::uuid[], $3::bigint[]) AS v(id, identity) "
                "WHERE s.service_id = $1 AND s.id = v.id AND s.identity_id IS DISTINCT FROM v.identity",
                service_id, [uuid.UUID(i) for i in ids], identities)
        return int(status.split()[-1])

    async def identities(self, service_id: int, ignored: bool, offset: int,
                         limit: int) -> tuple[list[IdentitySummary], int]:
        """A page of the unknown identities (the ignored ones instead with ``ignored``), the most
        recently seen first, and how many there are."""
        # the page's identities first (a cheap aggregate), then the summaries of those only
        ids = await self.pool.fetch(_PAGE_OF_IDENTITIES, service_id, ignored, offset, limit)
        rows = await self.pool.fetch(_SUMMARY.format(where="AND i.id = ANY($2::bigint[])")
                                     + " ORDER BY last_seen DESC, i.id", service_id, [row["id"] for row in ids])
        total = await self.pool.fetchval(
            "SELECT count(*) FROM unknown_identities i WHERE i.service_id = $1 AND i.promoted_to IS NULL "
            "AND i.merged_into IS NULL AND i.ignored = $2 AND EXISTS (SELECT 1 FROM sightings s "
            "WHERE s.service_id = i.service_id AND s.identity_id = i.id)", service_id, ignored)
        return [_summary(row) for row in rows], total

    async def identity(self, service_id: int, identity: int) -> IdentitySummary:
        row = await self.pool.fetchrow(_SUMMARY.format(where="AND i.id = $2"), service_id, identity)
        if row is None:
            raise NotFound(f"identity {identity} not found")
        return _summary(row)

    async def sightings_of(self, service_id: int, identity: int, offset: int, limit: int,
                           best_first: bool = False) -> list[Sighting]:
        """A page of an identity's sightings, the latest first (the best quality first with ``best_first``)."""
        await self.identity(service_id, identity)
        order = "quality DESC, seen_at" if best_first else "seen_at DESC, id"
        rows = await self.pool.fetch(f"SELECT {_SIGHTING_COLUMNS} FROM sightings WHERE service_id = $1 AND "
                                     f"identity_id = $2 ORDER BY {order} OFFSET $3 LIMIT $4",
                                     service_id, identity, offset, limit)
        return [_sighting(row) for row in rows]

    async def sightings(self, service_id: int, ids: list[str]) -> dict[str, Sighting]:
        """The service's sightings among ``ids`` (others are left out)."""
        rows = await self.pool.fetch(f"SELECT {_SIGHTING_COLUMNS} FROM sightings WHERE service_id = $1 AND "
                                     "id = ANY($2::uuid[])", service_id, [uuid.UUID(i) for i in _uuids(ids)])
        return {row["id"]: _sighting(row) for row in rows}

    async def embeddings(self, service_id: int, identity: int, ids: list[str]) -> np.ndarray:
        """The embeddings of sightings ``ids`` of an identity; NotFound if any is not one of them."""
        wanted = _uuids(ids)
        rows = await self.pool.fetch("SELECT embedding FROM sightings WHERE service_id = $1 AND identity_id = $2 "
                                     "AND id = ANY($3::uuid[])", service_id, identity,
                                     [uuid.UUID(i) for i in wanted])
        if len(rows) != len(set(wanted)) or len(wanted) != len(ids):
            raise NotFound(f"not every sighting given belongs to identity {identity}")
        return np.stack([np.frombuffer(row["embedding"], np.float32) for row in rows])

    async def merge(self, service_id: int, keep: int, gone: int) -> None:
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("UPDATE sightings SET identity_id = $2 WHERE service_id = $1 AND identity_id = $3",
                                     service_id, keep, gone)
            await connection.execute("UPDATE unknown_identities SET merged_into = $3 WHERE service_id = $1 AND id = $2",
                                     service_id, gone, keep)

    async def split(self, service_id: int, identity: int, ids: list[str], new: int) -> None:
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("INSERT INTO unknown_identities (service_id, id) VALUES ($1, $2) "
                                     "ON CONFLICT DO NOTHING", service_id, new)
            await connection.execute("UPDATE sightings SET identity_id = $3 WHERE service_id = $1 AND "
                                     "identity_id = $2 AND id = ANY($4::uuid[])", service_id, identity, new,
                                     [uuid.UUID(i) for i in ids])

    async def ignore(self, service_id: int, identity: int) -> None:
        await self.pool.execute("UPDATE unknown_identities SET ignored = true WHERE service_id = $1 AND id = $2",
                                service_id, identity)

    async def delete(self, service_id: int, ids: list[str]) -> None:
        """Delete the service's sightings ``ids``; an identity left without sightings keeps its row
        (its id is not given again) and is no longer listed."""
        await self.pool.execute("DELETE FROM sightings WHERE service_id = $1 AND id = ANY($2::uuid[])", service_id,
                                _uuids(ids))

    async def promote(self, service_id: int, identity: int, subject: str) -> None:
        """The identity became ``subject``: its sightings are now sightings of that subject."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("UPDATE unknown_identities SET promoted_to = $3 WHERE service_id = $1 AND id = $2",
                                     service_id, identity, subject)
            await connection.execute("UPDATE sightings SET subject = $3 WHERE service_id = $1 AND identity_id = $2",
                                     service_id, identity, subject)


async def expired_sightings(pool: asyncpg.Pool, cutoff: datetime, limit: int) -> dict[int, list[str]]:
    """Up to ``limit`` sightings seen before ``cutoff``, of every service: their ids per service."""
    rows = await pool.fetch("SELECT service_id, id::text AS id FROM sightings WHERE seen_at < $1 LIMIT $2",
                            cutoff, limit)
    expired: dict[int, list[str]] = {}
    for row in rows:
        expired.setdefault(row["service_id"], []).append(row["id"])
    return expired


def _uuids(ids: list[str]) -> list[str]:
    """The well-formed UUIDs among ``ids`` (a malformed id names no sighting)."""
    valid = []
    for value in ids:
        try:
            valid.append(str(uuid.UUID(value)))
        except (ValueError, TypeError, AttributeError):
            continue
    return valid
