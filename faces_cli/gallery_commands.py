"""``faces gallery check [--repair]``: drift between a service's subject rows and its index shards.

Joins the platform's Ray cluster (``FACES_RAY_ADDRESS``, else a local one) and its PostgreSQL, lists
unfinished deletes and renames and faces whose subject has no row, and with ``--repair`` fixes them
(see :mod:`gallery.drift`). Exit status: 0 consistent (or repaired), 1 drift found and not repaired,
2 bad input.
"""

from __future__ import annotations

import argparse

from faces_cli.job_runs import run_job_command
from faces_cli.service_names import add_service_argument
from faces_settings import Settings


async def _check(settings: Settings, args: argparse.Namespace) -> int:
    from actors.index_shard import ShardGroup
    from batch_jobs.runtime import control_plane
    from faces_cli.service_names import resolve_service
    from gallery import drift
    from gallery.service_gallery import Gallery

    async with control_plane(settings) as control:
        service = await resolve_service(control, args.service)
        gallery = Gallery(control, ShardGroup.of(service, settings), service.id)
        found = await (drift.repair(gallery) if args.repair else drift.check(gallery))
    name = f"service {service.name!r} ({service.id})"
    if found.consistent:
        print(f"{name}: subjects and faces agree")
        return 0
    for line in found.lines():
        print(f"{name}: {line}" + (": repaired" if args.repair else ""))
    if not args.repair:
        print("run again with --repair to fix")
    return 0 if args.repair else 1


def check_command(args: argparse.Namespace) -> int:
    return run_job_command(_check, args)


def add_parsers(subparsers) -> None:
    gallery = subparsers.add_parser("gallery", help="a recognition service's subjects and faces")
    commands = gallery.add_subparsers(dest="gallery_command", required=True)
    check = commands.add_parser("check", help="find (and with --repair fix) drift between the subject rows in "
                                              "PostgreSQL and the faces in the index shards")
    add_service_argument(check)
    check.add_argument("--repair", action="store_true", help="finish unfinished deletes and renames, and give "
                                                             "faces without a subject row their row back")
    check.set_defaults(handler=check_command)
