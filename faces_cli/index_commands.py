"""``faces rebuild-index`` and ``faces reshard``: maintenance of a service's index shards."""

from __future__ import annotations

from batch_jobs import rebuild_index, reshard


def add_parsers(subparsers) -> None:
    rebuild = subparsers.add_parser("rebuild-index", help="rebuild the search indexes of a service's shards")
    rebuild_index.add_arguments(rebuild)
    rebuild.set_defaults(handler=rebuild_index.rebuild_command)
    move = subparsers.add_parser("reshard", help="move a service's faces onto another number of shards")
    reshard.add_arguments(move)
    move.set_defaults(handler=reshard.reshard_command)
