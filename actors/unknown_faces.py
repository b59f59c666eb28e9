"""A recognition service's sightings and identities of unknown faces, as the API uses them.

Remembering a face stores it three times, in this order: its row (embedding, crop) in the service's
sharded LanceDB sighting tables (searched by face), its identity from the service's identity keeper
(only for a face that matched no subject), and its record in PostgreSQL (``store.sightings``, the
truth for identities). Changes of identities (merge, split, ignore, promote) are checked and
written in PostgreSQL, then told to the keeper.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import ray

from actors.identity_keeper import KeeperNotLoaded, identity_keeper
from actors.index_shard import CALL_TIMEOUT_S, ShardGroup, ShardUnavailable
from facecore.face_json import box_json
from facecore.identities import UNASSIGNED
from facecore.models import SFACE
from facecore.pipeline import Face
from facecore.similarity import cosine_from_similarity, similarity_from_cosine
from store.control import Service
from store.errors import InvalidValue, NotFound
from store.faces import FaceRecord
from store.sightings import NewSighting, Sighting, SightingStore

# A time or source filter keeps only some of the nearest sightings: this many are looked at.
FILTERED_CANDIDATES = 1000


def _utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def new_sighting(seen_at: datetime, source: str, box: dict, quality: float, subject: str | None,
                 embedding: np.ndarray) -> NewSighting:
    """A sighting to store, with a new id (its identity is chosen when it is stored)."""
    return NewSighting(id=str(uuid.uuid4()), seen_at=seen_at, source=source, box=box, quality=quality,
                       subject=subject, identity=None, embedding=embedding)


@dataclass
class SightingMatch:
    sighting: Sighting
    similarity: float
    crop: bytes


class UnknownFaces:
    def __init__(self, service: Service, store: SightingStore, sighting_shards: ShardGroup, keeper):
        self.service = service
        self.store = store
        self.shards = sighting_shards
        self.keeper = keeper

    @classmethod
    def open(cls, service: Service, store: SightingStore, settings, threshold: float) -> "UnknownFaces":
        shards = ShardGroup.for_service(service.id, service.shards, settings, replicas=service.shard_replicas,
                                        call_timeout_s=CALL_TIMEOUT_S, kind="sightings")
        keeper = identity_keeper(service.id, cosine_from_similarity(threshold), settings.identity_seed_quality)
        return cls(service, store, shards, keeper)

    async def _keeper(self, method: str, *args, recorded: bool = False):
        """A keeper call; a keeper that (re)started empty is loaded from PostgreSQL first (and then
        not told a change already ``recorded`` there: it loaded it). An identity the keeper does not
        hold (changed meanwhile by another request) is not found."""
        try:
            try:
                return await asyncio.wait_for(getattr(self.keeper, method).remote(*args), CALL_TIMEOUT_S)
            except KeeperNotLoaded:
                state = await self.store.assigned(self.service.id)
                await asyncio.wait_for(self.keeper.load.remote(*state), CALL_TIMEOUT_S)
                if recorded:
                    return None
                return await asyncio.wait_for(getattr(self.keeper, method).remote(*args), CALL_TIMEOUT_S)
        except KeyError as exc:
            raise NotFound(str(exc.args[0]) if exc.args else "identity not found") from None
        except TimeoutError as exc:
            raise ShardUnavailable("the identity keeper did not answer in time; retry later") from exc

    async def remember(self, faces: list[Face], crops: list[bytes], subjects: list[str | None], source: str,
                       model: str, threshold: float) -> list[NewSighting]:
        """Store the faces of one image as sightings; those of no subject get identities (at the
        service's recognition ``threshold``, a similarity, as read for this request)."""
        now = datetime.now(timezone.utc)
        sightings = [new_sighting(now, source, box_json(face), float(face.quality.score), subject, face.embedding)
                     for face, subject in zip(faces, subjects)]
        await self.store_sightings(sightings, crops, model, threshold)
        return sightings

    async def store_sightings(self, sightings: list[NewSighting], crops: list[bytes], model: str,
                              threshold: float) -> None:
        """Store sightings (one crop each): rows in LanceDB, identities of those of no subject (set on
        them, at the service's recognition ``threshold`` now), then their records."""
        await self.shards.add([FaceRecord(face_id=s.id, subject=s.source, embedding=s.embedding, model=model,
                                          crop=crop, source=s.source, created_at=s.seen_at)
                               for s, crop in zip(sightings, crops)])
        unknown = [s for s in sightings if s.subject is None]
        if unknown:
            assigned = await self._keeper("assign", np.stack([s.embedding for s in unknown]),
                                          [s.quality for s in unknown], cosine_from_similarity(threshold))
            for sighting, identity in zip(unknown, assigned):
                sighting.identity = None if identity == UNASSIGNED else int(identity)
        await self.store.add(self.service.id, sightings)

    async def merge(self, keep: int, gone: int) -> None:
        if keep == gone:
            raise InvalidValue("an identity cannot be merged with itself")
        await self.store.identity(self.service.id, keep)
        await self.store.identity(self.service.id, gone)
        await self.store.merge(self.service.id, keep, gone)
        await self._keeper("merge", keep, gone, recorded=True)

    async def split(self, identity: int, sighting_ids: list[str]) -> int:
        """Move some of an identity's sightings into a new identity; returns its id."""
        summary = await self.store.identity(self.service.id, identity)
        vectors = await self.store.embeddings(self.service.id, identity, sighting_ids)
        if len(vectors) >= summary.sightings:
            raise InvalidValue("a split moves some of an identity's sightings, not all of them")
        new = await self._keeper("split", identity, vectors)
        await self.store.split(self.service.id, identity, sighting_ids, new)
        return new

    async def ignore(self, identity: int) -> None:
        await self.store.identity(self.service.id, identity)
        await self.store.ignore(self.service.id, identity)
        await self._keeper("ignore", identity, recorded=True)

    async def best_faces(self, identity: int, count: int, model: str, subject: str) -> list[FaceRecord]:
        """The ``count`` best-quality sightings of an identity as faces of ``subject``."""
        best = await self.store.sightings_of(self.service.id, identity, 0, count, best_first=True)
        rows = await asyncio.gather(*(self.shards.get_face(s.id) for s in best))
        return [FaceRecord(face_id=str(uuid.uuid4()), subject=subject, embedding=row.embedding, model=model,
                           crop=row.crop, source=f"sighting:{row.face_id}", created_at=datetime.now(timezone.utc))
                for row in rows if row is not None]

    async def promoted(self, identity: int, subject: str) -> None:
        """The identity's best faces are enrolled as ``subject``: it is no longer unknown."""
        await self.store.promote(self.service.id, identity, subject)
        await self._keeper("remove", identity, recorded=True)

    async def crop(self, sighting_id: str) -> bytes:
        if not await self.store.sightings(self.service.id, [sighting_id]):
            raise NotFound(f"sighting '{sighting_id}' not found")
        row = await self.shards.get_face(sighting_id)
        if row is None:
            raise NotFound(f"sighting '{sighting_id}' not found")
        return row.crop

    async def search(self, queries: np.ndarray, limit: int, since: datetime | None, until: datetime | None,
                     source: str | None) -> list[list[SightingMatch]]:
        """Per query the past sightings most alike, best first, seen between ``since`` and ``until``
        and from ``source`` when given."""
        since, until = _utc(since), _utc(until)
        filtered = since is not None or until is not None
        candidates = FILTERED_CANDIDATES if filtered else limit
        hits = await self.shards.search_faces(queries, candidates, source)
        records = await self.store.sightings(self.service.id, [face_id for row in hits for face_id, _, _ in row])
        results = []
        for row in hits:
            kept = [(records[face_id], cosine) for face_id, _, cosine in row if face_id in records
                    and (since is None or records[face_id].seen_at >= since)
                    and (until is None or records[face_id].seen_at <= until)][:limit]
            crops = await asyncio.gather(*(self.shards.get_face(s.id) for s, _ in kept))
            results.append([SightingMatch(s, float(similarity_from_cosine(cosine)), crop.crop if crop else b"")
                            for (s, cosine), crop in zip(kept, crops)])
        return results

    async def recluster(self, cluster: Callable[[np.ndarray], Awaitable[np.ndarray]]) -> tuple[int, int]:
        """Re-cluster the service's sightings of no subject: ``cluster(vectors)`` gives their
        average-linkage labels (a job computes them); the keeper turns those into identities, keeping
        ids where clusters survive; the result is recorded and the keeper reloaded from the record (so
        sightings assigned meanwhile are kept). Returns (sightings changed, identities)."""
        ids, vectors, qualities, previous = await self.store.unknown_history(self.service.id)
        vectors = vectors.reshape(-1, SFACE.embedding_dim)
        labels = await cluster(vectors)
        assigned = await self._keeper("adopt", vectors, labels, qualities, previous)
        identities = [None if identity == UNASSIGNED else int(identity) for identity in assigned]
        changed = await self.store.relabel(self.service.id, ids, identities)
        await self._keeper("load", *await self.store.assigned(self.service.id))
        return changed, len({i for i in identities if i is not None})

    async def erase(self, sighting_ids: list[str]) -> None:
        """Erase sightings (expired): their rows leave the sighting tables (their files within
        ``erase_after_s``), then their records; the keeper reloads what is left."""
        await self.shards.delete_ids(sighting_ids)
        await self.store.delete(self.service.id, sighting_ids)
        await self._keeper("load", *await self.store.assigned(self.service.id))

    async def drop(self) -> None:
        """Drop the service's sighting tables and its keeper (the service is deleted)."""
        await self.shards.drop()
        ray.kill(self.keeper, no_restart=True)
