"""``faces unknowns list | show | sightings | promote | merge | split | ignore | search``: the
identities of unknown faces of a recognition service, and its past sightings, on a running platform
(``--url``, the service's API key); ``faces unknowns recluster --service NAME``: the re-clustering
job of a service's whole history (:mod:`batch_jobs.recluster`, on the cluster like the other jobs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faces_cli.api_calls import api_call, api_client
from faces_cli.job_runs import run_job_command
from faces_cli.service_names import add_service_argument
from faces_settings import Settings


def _print(args: argparse.Namespace, value, lines) -> None:
    """``value`` as JSON with ``--json``, else the lines made of it."""
    if args.json:
        print(json.dumps(value, indent=2))
        return
    for line in lines(value):
        print(line)


def _identity_lines(rows: list[dict]):
    for row in rows:
        flag = " (ignored)" if row["ignored"] else ""
        yield (f"{row['id']}\t{row['sightings']} sightings\t{row['first_seen']} .. {row['last_seen']}\t"
               f"best {row['best_sighting']}\t{', '.join(row['sources'])}{flag}")


def _sighting_lines(rows: list[dict]):
    for row in rows:
        similarity = f"\t{row['similarity']:.3f}" if "similarity" in row else ""
        who = row["subject"] or (f"identity {row['identity']}" if row["identity"] is not None else "unknown")
        yield f"{row['id']}\t{row['seen_at']}\t{row['source']}\t{who}{similarity}"


def _run(args: argparse.Namespace) -> int:
    if args.unknowns_command == "search" and not (args.image or args.embedding):
        print("error: search needs an image or --embedding", file=sys.stderr)
        return 2

    def call() -> None:
        with api_client(args) as client:
            value, lines = _COMMANDS[args.unknowns_command](client, args)
            _print(args, value, lines)

    return api_call(call)


def _search(client, args):
    if args.embedding:
        embeddings = [json.loads(Path(args.embedding).read_text())]
        found = client.search_sightings_embeddings(embeddings, args.limit, args.since, args.until, args.source)
    else:
        found = client.search_sightings(args.image, args.limit, args.since, args.until, args.source)
    return found, lambda value: (line for matches in value["result"] for line in _sighting_lines(matches))


async def _recluster(settings: Settings, args: argparse.Namespace) -> int:
    from batch_jobs.recluster import recluster
    from batch_jobs.runtime import control_plane
    from faces_cli.service_names import resolve_service

    async with control_plane(settings) as control:
        service = await resolve_service(control, args.service)
        result = await recluster(settings, control, service)
    print(f"service {service.name!r}: {result.sightings} unknown sightings re-clustered into {result.identities} "
          f"identities, {result.changed} sightings changed identity, in {result.seconds:.1f} s")
    return 0


def recluster_command(args: argparse.Namespace) -> int:
    return run_job_command(_recluster, args)


_COMMANDS = {
    "list": lambda client, args: (client.list_identities(args.page, args.size, args.ignored)["identities"],
                                  _identity_lines),
    "show": lambda client, args: (client.get_identity(args.identity), lambda row: _identity_lines([row])),
    "sightings": lambda client, args: (client.identity_sightings(args.identity, args.page, args.size),
                                       _sighting_lines),
    "promote": lambda client, args: (client.promote_identity(args.identity, args.subject, args.faces),
                                     lambda row: [f"enrolled {row['enrolled']} faces as {row['subject']!r}"]),
    "merge": lambda client, args: (client.merge_identities(args.identity, args.other),
                                   lambda row: _identity_lines([row])),
    "split": lambda client, args: (client.split_identity(args.identity, args.sightings),
                                   lambda row: [f"new identity {row['identity']}"]),
    "ignore": lambda client, args: (client.ignore_identity(args.identity), lambda row: _identity_lines([row])),
    "search": _search,
}


def add_parsers(subparsers) -> None:
    unknowns = subparsers.add_parser("unknowns", help="identities of unknown faces and past sightings "
                                                      "(recognize with remember_unknowns=true)")
    commands = unknowns.add_subparsers(dest="unknowns_command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help)
        parser.add_argument("--url", default=None, help="API base URL (default http://FACES_HOST:FACES_PORT)")
        parser.add_argument("--api-key", required=True, help="the recognition service's API key")
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(handler=_run)
        return parser

    def paged(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--page", type=int, default=0)
        parser.add_argument("--size", type=int, default=20)

    listing = command("list", "identities of unknown faces, the most recently seen first")
    paged(listing)
    listing.add_argument("--ignored", action="store_true", help="the ignored identities instead")
    command("show", "one identity").add_argument("identity", type=int)
    sightings = command("sightings", "an identity's sightings, the latest first")
    sightings.add_argument("identity", type=int)
    paged(sightings)
    promote = command("promote", "enroll an identity's best sightings as a subject")
    promote.add_argument("identity", type=int)
    promote.add_argument("subject")
    promote.add_argument("--faces", type=int, default=5, help="how many sightings to enroll (default 5)")
    merge = command("merge", "the sightings of OTHER join IDENTITY")
    merge.add_argument("identity", type=int)
    merge.add_argument("other", type=int)
    split = command("split", "move sightings of an identity into a new identity")
    split.add_argument("identity", type=int)
    split.add_argument("sightings", nargs="+", help="sighting ids")
    command("ignore", "stop listing an identity").add_argument("identity", type=int)
    search = command("search", "past sightings of the person in an image (or of an embedding)")
    search.add_argument("image", nargs="?", help="photo of the person")
    search.add_argument("--embedding", default=None, help="a JSON file holding one embedding instead of an image")
    search.add_argument("--limit", type=int, default=10)
    search.add_argument("--since", default=None, help="ISO 8601 time")
    search.add_argument("--until", default=None, help="ISO 8601 time")
    search.add_argument("--source", default=None, help="only sightings of this source")
    recluster = commands.add_parser("recluster", help="re-cluster a service's whole history of unknown "
                                                      "sightings, keeping ids where clusters survive (a job)")
    add_service_argument(recluster)
    recluster.set_defaults(handler=recluster_command)
