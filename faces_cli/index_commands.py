"""``faces rebuild-index`` and ``faces reshard``: maintenance of a service's index shards
(the jobs: :mod:`batch_jobs.rebuild_index`, :mod:`batch_jobs.reshard`)."""

from __future__ import annotations

import argparse
import time

from faces_cli.job_runs import run_job_command
from faces_cli.service_names import add_service_argument
from faces_settings import Settings
from store.control import Service


async def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from batch_jobs.rebuild_index import rebuild_indexes
    from batch_jobs.runtime import control_plane
    from faces_cli.service_names import resolve_service

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


async def _reshard(settings: Settings, args: argparse.Namespace) -> int:
    from batch_jobs.reshard import reshard
    from batch_jobs.runtime import control_plane
    from faces_cli.service_names import resolve_service

    async with control_plane(settings) as control:
        service = await resolve_service(control, args.service)
        result = await reshard(settings, control, service, args.shards,
                               lambda copied: print(f"\rcopied {copied} faces", end="", flush=True))
    print(f"\nservice {service.name!r}: {result.faces} faces moved from {result.old_shards} to "
          f"{result.new_shards} shard(s) in {result.seconds:.1f} s")
    return 0


def rebuild_command(args: argparse.Namespace) -> int:
    return run_job_command(_rebuild, args)


def reshard_command(args: argparse.Namespace) -> int:
    return run_job_command(_reshard, args)


def add_parsers(subparsers) -> None:
    rebuild = subparsers.add_parser("rebuild-index", help="rebuild the search indexes of a service's shards")
    target = rebuild.add_mutually_exclusive_group(required=True)
    add_service_argument(target, required=False)
    target.add_argument("--all", action="store_true", help="every recognition service")
    rebuild.set_defaults(handler=rebuild_command)

    move = subparsers.add_parser("reshard", help="move a service's faces onto another number of shards")
    add_service_argument(move)
    move.add_argument("--shards", type=int, required=True, help="the new number of shards")
    move.set_defaults(handler=reshard_command)
