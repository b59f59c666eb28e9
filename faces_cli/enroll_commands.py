"""``faces enroll | migrate``: bulk jobs on Ray Data (see :mod:`batch_jobs.enroll`, :mod:`batch_jobs.migrate`)."""

from __future__ import annotations

from batch_jobs.cli import add_enroll_arguments, add_migrate_arguments, enroll_command, migrate_command


def add_parsers(subparsers) -> None:
    enroll = subparsers.add_parser("enroll", help="enroll a folder tree or a manifest of images into a recognition "
                                                  "service (Ray Data; FACES_RAY_ADDRESS to use a cluster)")
    add_enroll_arguments(enroll)
    enroll.set_defaults(handler=enroll_command)
    migrate = subparsers.add_parser("migrate", help="re-embed every face of a service from its stored crops")
    add_migrate_arguments(migrate)
    migrate.set_defaults(handler=migrate_command)
