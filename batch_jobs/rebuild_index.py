"""Rebuild the approximate search indexes of every shard of one service, or of all services.

Each shard builds its index inside its own actor, wherever Ray placed it in the cluster, from a
snapshot of its faces, while it keeps answering searches (faces added meanwhile are searched exactly
beside the index). All shards build in parallel; progress is reported as shards finish.

    faces rebuild-index --service NAME      # or --all
    ray job submit -- python -m faces_cli.main rebuild-index --all
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from faces_settings import Settings
from store.control import Service

# Ray and the shard client are imported where used, so that importing this module stays cheap.


async def rebuild_indexes(settings: Settings, services: list[Service],
                          progress: Callable[[Service, dict], None] = lambda service, stats: None) -> list[dict]:
    """Build every shard's index of ``services`` in parallel; returns the per-shard stats."""
    from actors.index_shard import ShardGroup

    async def one_service(service: Service) -> list[dict]:
        group = ShardGroup.of(service, settings)
        replicas = [asyncio.ensure_future(replica.build_index.remote())  # their own copies, not reported
                    for members in group.members for replica in members[1:]]
        stats = []
        for finished in asyncio.as_completed([asyncio.ensure_future(actor.build_index.remote())
                                              for actor in group.actors]):
            shard_stats = await finished
            progress(service, shard_stats)
            stats.append({"service_id": service.id, **shard_stats})
        await asyncio.gather(*replicas)
        return stats

    per_service = await asyncio.gather(*(one_service(s) for s in services))
    return [row for rows in per_service for row in rows]
