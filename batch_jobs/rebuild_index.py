"""Rebuild the approximate search indexes of every shard of one service, or of all services.

Each shard builds its index inside its own actor, wherever Ray placed it in the cluster, from a
snapshot of its faces, while it keeps answering searches (faces added meanwhile are searched exactly
beside the index). All shards build in parallel; progress is reported as shards finish.

    faces rebuild-index --service NAME      # or --all
    ray job submit -- python -m batch_jobs.rebuild_index --all
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

from faces_settings import Settings
from store.control import Service

# Ray and the shard client are imported where used, so that the CLI can load this module cheaply.


async def rebuild_indexes(settings: Settings, services: list[Service],
                          progress: Callable[[Service, dict], None] = lambda service, stats: None) -> list[dict]:
    """Build every shard's index of ``services`` in parallel; returns the per-shard stats."""
    from actors.shard_group import ShardGroup

    async def one_service(service: Service) -> list[dict]:
        group = ShardGroup.for_service(service.id, service.shards, settings)
        stats = []
        for finished in asyncio.as_completed([asyncio.ensure_future(actor.build_index.remote())
                                              for actor in group.actors]):
            shard_stats = await finished
            progress(service, shard_stats)
            stats.append({"service_id": service.id, **shard_stats})
        return stats

    per_service = await asyncio.gather(*(one_service(s) for s in services))
    return [row for rows in per_service for row in rows]


async def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from batch_jobs.runtime import control_plane, resolve_service

    async with control_plane(settings) as control:
        if args.all:
            services = [s for s in await control.list_all_services() if s.type == "recognition"]
        else:
            services = [await resolve_service(control, args.service)]
    total = sum(s.shards for s in services)
    done = 0
    started = time.perf_counter()

    def progress(service: Service, stats: dict) -> None:
        nonlocal done
        done += 1
        print(f"[{done}/{total}] service {service.name!r} ({service.id}): {stats['indexed_faces']} faces indexed "
              f"in {stats['last_build_seconds'] or 0:.1f} s, {stats['ram_bytes_per_face'] or 0:.0f} B/face in RAM",
              flush=True)

    stats = await rebuild_indexes(settings, services, progress)
    faces = sum(row["indexed_faces"] for row in stats)
    print(f"rebuilt {len(stats)} shard index(es) of {len(services)} service(s), {faces} faces, "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--service", help="service id, APP/SERVICE, or a service name unique to one app")
    target.add_argument("--all", action="store_true", help="every recognition service")


def rebuild_command(args: argparse.Namespace) -> int:
    from batch_jobs.runtime import run_job_command

    return run_job_command(_rebuild, args)


def main() -> int:
    parser = argparse.ArgumentParser(description="Rebuild the search indexes of index shards")
    add_arguments(parser)
    return rebuild_command(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
