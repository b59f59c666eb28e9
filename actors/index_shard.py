"""The index shard actors of one service (Ray actors over LanceDB tables), seen as one index: routing of writes,
fan-out and merge of searches.

A face lives in one shard (:class:`faceindex.layout.ServiceLayout`), so point operations (get, delete, verify) go to
one shard and only searches and listings fan out. The shards are named, detached, restartable Ray
actors: every ingress replica and batch job reaches the same ones.

A shard whose process dies is restarted by Ray, and calls made meanwhile wait for it (and are
retried: every call is safe to repeat). A group made for requests (``call_timeout_s``, e.g.
:data:`CALL_TIMEOUT_S`) waits at most that long; then, or when the actor cannot come back, its calls
raise :class:`ShardUnavailable` (503 on the API). Jobs wait as long as it takes; index builds and
compactions are never bounded.

With ``replicas`` > 1 each shard also has ``replicas - 1`` read replicas: actors on the same table,
preferring other nodes than its primary. Writes go to the primary, which commits them, and then to
every replica (in the primary's order, :mod:`faceindex.replica`) before they are acknowledged, so an
acknowledged face is found on every member. Reads are balanced over the members and carried on by
another member when one dies (:mod:`actors.shard_reads`); writes wait for the primary to come back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.shard_reads import HEDGE_AFTER_S, MemberReads
from facecore.embed import DEFAULT_EMBEDDING_MODEL, embedding_model
from faceindex.config import SearchConfig
from faceindex.layout import ServiceLayout
from faceindex.shard import SHARD_ENV, IndexShard
from faceindex.upkeep import TableUpkeep
from faces_settings import Settings
from store.control import Service
from store.faces import FaceRecord

log = logging.getLogger(__name__)
NAMESPACE = "faces"
SHARD_THREADS = 4
CALL_TIMEOUT_S = 30.0
# Ray places an actor that reserves no resource at all on a random node and honours only a hard node
# affinity for it, never a soft one; a token of memory, which any node has to spare, makes the shards'
# preferred nodes (spread_placements) count.
PLACEMENT_MEMORY_BYTES = 2**20


class ShardUnavailable(Exception):
    """An index shard did not answer in time (restarting, or gone): retry later."""


async def _results(refs, timeout_s: float | None) -> list:
    """The results of shard calls, waiting at most ``timeout_s`` (None: no limit) for all of them."""
    try:
        return await asyncio.wait_for(asyncio.gather(*refs), timeout_s)
    except (TimeoutError, ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
        raise ShardUnavailable(f"an index shard is unavailable ({type(exc).__name__}); retry later") from exc


def search_config(settings: Settings) -> SearchConfig:
    """How index shards search, from the settings (approximate indexes saved under the media root)."""
    budget = settings.shard_memory_budget_mb * 2**20 if settings.shard_memory_budget_mb else None
    return SearchConfig(mode=settings.search_mode, ann_min_faces=settings.ann_min_faces,
                        candidates=settings.ann_candidates, scan_threads=settings.ann_scan_threads,
                        memory_budget_bytes=budget,
                        index_dir=settings.resolved().index_uri,
                        device="cuda" if settings.shard_num_gpus > 0 else "numpy")


def table_upkeep(settings: Settings) -> TableUpkeep:
    """How index shards compact their tables and erase deleted faces, from the settings."""
    return TableUpkeep(erase_after_s=settings.erase_after_s)


def spread_placements(service_id: int, shards: int, replicas: int = 1) -> list[list[NodeAffinitySchedulingStrategy | str]]:
    """Per shard and member (primary, then replicas), a preferred node: the alive nodes with CPUs in
    turn (offset by the service, so that small services do not all start on the same node), so that
    the members of a shard prefer different nodes. Soft: a member whose node is gone starts on any
    other. Ray's own "SPREAD" places actors that reserve no CPU unevenly. Honoured for actors that
    reserve some resource (:data:`PLACEMENT_MEMORY_BYTES`)."""
    nodes = sorted(node["NodeID"] for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU"))
    log.info("the %d shard(s) of service %d (%d member(s) each) prefer nodes in turn of %s", shards, service_id,
             replicas, nodes)
    if not nodes:
        return [["SPREAD"] * replicas for _ in range(shards)]
    return [[NodeAffinitySchedulingStrategy(nodes[(service_id + shard + member) % len(nodes)], soft=True)
             for member in range(replicas)] for shard in range(shards)]


class ShardGroup:
    """Async client of the IndexShard actors of one service: ``shards`` primaries (``actors``), each
    with ``replicas - 1`` read replicas."""

    def __init__(self, service_id: int, shards: int, faces_uri: str, dim: int,
                 search: SearchConfig = SearchConfig(), num_cpus: float = 0.0, num_gpus: float = 0.0,
                 upkeep: TableUpkeep = TableUpkeep(), call_timeout_s: float | None = None, kind: str = "faces",
                 replicas: int = 1, hedge_after_s: float = HEDGE_AFTER_S, model: str = DEFAULT_EMBEDDING_MODEL):
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        self.service_id = service_id
        self.layout = ServiceLayout(service_id, shards, kind, model)
        self.faces_uri = faces_uri
        self.call_timeout_s = call_timeout_s
        # Threaded actors: an index build runs beside searches instead of blocking them. Spread over the
        # cluster's nodes, so that a node's loss takes as few of a service's shards as it can.
        placements = spread_placements(service_id, shards, replicas)
        replica_search = dataclasses.replace(search, memory_budget_bytes=None)  # the primary's budget decides

        def member(shard: int, replica: int):
            return ray.remote(IndexShard).options(
                name=self.layout.actor_name(shard, replica), namespace=NAMESPACE, get_if_exists=True,
                lifetime="detached", max_restarts=-1, max_task_retries=-1, num_cpus=num_cpus, num_gpus=num_gpus,
                memory=PLACEMENT_MEMORY_BYTES,
                max_concurrency=SHARD_THREADS, enable_task_events=False,  # no per-call event records in the GCS
                runtime_env={"env_vars": SHARD_ENV},
                scheduling_strategy=placements[shard][replica],
            ).remote(faces_uri, self.layout.table_name(shard), dim, replica_search if replica else search, upkeep,
                     replica=replica > 0)

        self._retire_extra_replicas(replicas)
        self.members = [[member(shard, replica) for replica in range(replicas)] for shard in range(shards)]
        self.actors = [members[0] for members in self.members]  # the primaries
        self._reads = [MemberReads(members, hedge_after_s) for members in self.members]

    def _retire_extra_replicas(self, replicas: int) -> None:
        """Stop replicas left by a larger ``replicas`` setting: they no longer get the writes, so reads
        must not reach them should the setting grow again."""
        named = [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
                 if entry["namespace"] == NAMESPACE]
        for name in self.layout.extra_replicas(named, replicas):
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
            except ValueError:  # stopped meanwhile
                continue

    @classmethod
    def for_service(cls, service_id: int, shards: int, settings: Settings, *, replicas: int | None,
                    call_timeout_s: float | None = None, kind: str = "faces",
                    model: str = DEFAULT_EMBEDDING_MODEL) -> "ShardGroup":
        """The shards of a service as every part of the platform must open them (same search setup);
        ``replicas``: the service's own actors per shard (``Service.shard_replicas``), None for the
        platform's default (``FACES_SHARD_REPLICAS``); every opener must pass the service's value, as
        a group opened with fewer stops the extra replicas. ``call_timeout_s``: how long a call may
        wait (requests), None for no limit (jobs); ``kind``: its faces, or its sightings of faces
        (:mod:`faceindex.layout`); ``model``: the service's embedding model (its layout, and its
        embeddings' dimension)."""
        return cls(service_id, shards, settings.faces_uri, embedding_model(model).embedding_dim,
                   search_config(settings), num_gpus=settings.shard_num_gpus, upkeep=table_upkeep(settings),
                   call_timeout_s=call_timeout_s, kind=kind, replicas=replicas or settings.shard_replicas,
                   model=model)

    @classmethod
    def of(cls, service: Service, settings: Settings, call_timeout_s: float | None = None,
           kind: str = "faces") -> "ShardGroup":
        """:meth:`for_service` of ``service``'s shard count, shard replicas and model."""
        return cls.for_service(service.id, service.shards, settings, replicas=service.shard_replicas,
                               call_timeout_s=call_timeout_s, kind=kind, model=service.model)

    async def _gather(self, calls) -> list:
        return await _results(calls, self.call_timeout_s)

    async def _write(self, shard: int, method: str, *args):
        """A write through the primary, applied by every replica before it returns."""
        primary, *replicas = self.members[shard]
        if not replicas:
            return await getattr(primary, method).remote(*args)
        result, before, after = await primary.write.remote(method, *args)
        await asyncio.gather(*(replica.follow.remote(method, args, before, after) for replica in replicas))
        return result

    async def _write_all(self, method: str, *args) -> list:
        return await self._gather([self._write(shard, method, *args) for shard in range(len(self.actors))])

    def _read(self, shard: int, method: str, *args):
        """A read of one shard from whichever of its members answers first (the primary when it has none)."""
        reads = self._reads[shard]
        if len(reads.members) == 1:
            return getattr(reads.members[0], method).remote(*args)
        return reads.read(method, *args)

    async def _read_all(self, method: str, *args) -> list:
        return await self._gather([self._read(shard, method, *args) for shard in range(len(self.actors))])

    async def add(self, records: Sequence[FaceRecord]) -> None:
        """Acknowledged once every owning shard has committed its part (and its replicas applied it)."""
        parts = self.layout.split(records, lambda record: record.face_id)
        await self._gather([self._write(shard, "add", part) for shard, part in parts.items()])

    async def search_subjects(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float, str]]]:
        """Per query the top-k distinct subjects ``(subject, cosine, face_id)`` over all shards."""
        per_shard = await self._read_all("search_subjects", queries, k)
        merged = []
        for query_index in range(len(queries)):
            best: dict[str, tuple[str, float, str]] = {}
            for results in per_shard:
                for subject, cosine, face_id in results[query_index]:
                    if subject not in best or cosine > best[subject][1]:
                        best[subject] = (subject, cosine, face_id)
            merged.append(sorted(best.values(), key=lambda item: -item[1])[:k])
        return merged

    async def search_faces(self, queries: np.ndarray, k: int,
                           subject: str | None = None) -> list[list[tuple[str, str, float]]]:
        """Per query the top-k faces ``(face_id, subject, cosine)`` over all shards, best first."""
        per_shard = await self._read_all("search_faces", queries, k, subject)
        return [sorted((hit for results in per_shard for hit in results[query_index]),
                       key=lambda hit: -hit[2])[:k] for query_index in range(len(queries))]

    async def similarity_to(self, face_id: str, queries: np.ndarray) -> np.ndarray | None:
        return (await self._gather([self._read(self.layout.shard_of(face_id), "similarity_to", face_id, queries)]))[0]

    async def get_face(self, face_id: str) -> FaceRecord | None:
        return (await self._gather([self._read(self.layout.shard_of(face_id), "get_face", face_id)]))[0]

    async def delete_ids(self, face_ids: Sequence[str]) -> list[tuple[str, str]]:
        parts = self.layout.split(face_ids, str)
        deleted = await self._gather([self._write(shard, "delete_ids", ids) for shard, ids in parts.items()])
        return [row for rows in deleted for row in rows]

    async def delete_subject(self, subject: str) -> int:
        return sum(await self._write_all("delete_subject", subject))

    async def delete_all(self) -> int:
        return sum(await self._write_all("delete_all"))

    async def rename_subject(self, old: str, new: str) -> int:
        return sum(await self._write_all("rename_subject", old, new))

    async def subjects(self) -> dict[str, int]:
        """Face count per subject over all shards."""
        counts: dict[str, int] = {}
        for shard_counts in await self._read_all("subjects"):
            for subject, faces in shard_counts.items():
                counts[subject] = counts.get(subject, 0) + faces
        return counts

    async def subject_counts(self, subjects: list[str]) -> list[int]:
        """Face counts of the named subjects over all shards (a page of subjects, not all of them)."""
        return [sum(counts) for counts in zip(*await self._read_all("subject_counts", subjects))]

    async def erase_deleted(self) -> None:
        """Erase deleted faces from every shard's table files now (instead of ``erase_after_s`` later)."""
        await self._gather([actor.erase_deleted.remote() for actor in self.actors])

    async def count(self, subject: str | None = None) -> int:
        return sum(await self._read_all("count", subject))

    async def list_faces(self, subject: str | None, offset: int, limit: int) -> tuple[list[tuple[str, str]], int]:
        """A page of ``(face_id, subject)``: shard 0's faces first, then shard 1's, and so on."""
        counts = await self._read_all("count", subject)
        total = sum(counts)
        rows: list[tuple[str, str]] = []
        start = 0
        for shard, count in enumerate(counts):
            end = start + count
            if end > offset and len(rows) < limit:
                local_offset = max(0, offset - start)
                page, _ = (await self._gather([self._read(shard, "list_faces", subject, local_offset,
                                                          limit - len(rows))]))[0]
                rows.extend(page)
            start = end
        return rows, total

    async def existing(self, face_ids: Sequence[str]) -> set[str]:
        """Those of ``face_ids`` stored in the service (one call per shard holding any)."""
        parts = self.layout.split(face_ids, str)
        found = await self._gather([self._read(shard, "existing", ids) for shard, ids in parts.items()])
        return {face_id for ids in found for face_id in ids}

    async def replace_from(self, shard: int, source_table: str) -> list[str]:
        """A migration's swap of one shard (:meth:`faceindex.shard.IndexShard.replace_from`); its
        replicas load the new rows once the primary serves them."""
        primary, *replicas = self.members[shard]
        missing = await primary.replace_from.remote(source_table)
        if not missing:
            await asyncio.gather(*(replica.reload.remote() for replica in replicas))
        return missing

    async def _unbounded(self, method: str, actors=None) -> list:
        return await asyncio.gather(*(getattr(actor, method).remote() for actor in (actors or self.actors)))

    async def optimize(self) -> None:
        """Compact every shard's table: one file per commit adds up after bulk writes."""
        await self._unbounded("optimize")

    async def build_indexes(self) -> list[dict]:
        """Build every shard's approximate index in parallel (searches go on); per-shard stats of the
        primaries (replicas build their own copies beside them)."""
        built = await self._unbounded("build_index", [member for members in self.members for member in members])
        return built[::len(self.members[0])]

    async def stats(self) -> list[dict]:
        return await self._gather([actor.stats.remote() for actor in self.actors])

    async def drop(self) -> None:
        """Drop every shard's table and stop its actors."""
        await self._unbounded("drop")
        for members in self.members:
            for actor in members:
                ray.kill(actor, no_restart=True)


class RequestShardGroups:
    """The shard groups of services as a process serving requests opens them: once per service, shard
    count and replica count (a service whose replicas change through the admin API gets a group of the
    new count at its next request), each call waiting at most :data:`CALL_TIMEOUT_S`."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._groups: dict[tuple[int, int, int | None, str], ShardGroup] = {}

    def of(self, service_id: int, shards: int, replicas: int | None,
           model: str = DEFAULT_EMBEDDING_MODEL) -> ShardGroup:
        key = (service_id, shards, replicas, model)
        if key not in self._groups:
            self.forget(service_id)  # a group of the service's previous layout, replica count or model
            self._groups[key] = ShardGroup.for_service(service_id, shards, self.settings, replicas=replicas,
                                                       call_timeout_s=CALL_TIMEOUT_S, model=model)
        return self._groups[key]

    def forget(self, service_id: int) -> None:
        """Drop the groups of a service (deleted, or resharded)."""
        for key in [k for k in self._groups if k[0] == service_id]:
            del self._groups[key]
