"""``faces users add|list``: users of the web UI, from the command line (the owner without the UI).

Works on the platform's PostgreSQL (``FACES_POSTGRES_DSN``, else the embedded one under the data dir),
with the server running or stopped. The password is read from ``FACES_USER_PASSWORD`` or asked twice.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from faces_settings import get_settings
from store.errors import StoreError


def _password() -> str:
    if password := os.environ.get("FACES_USER_PASSWORD"):
        return password
    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        raise SystemExit("error: the passwords differ")
    return password


async def _add(args: argparse.Namespace, password: str) -> str:
    from batch_jobs.runtime import control_plane
    from store.users import UserStore

    async with control_plane(get_settings()) as control:
        user = await UserStore(control.pool).create(args.email, password, args.role)
    return f"user {user.email} ({user.global_role}) created, id {user.id}"


async def _list(args: argparse.Namespace) -> list[str]:
    from batch_jobs.runtime import control_plane
    from store.users import UserStore

    async with control_plane(get_settings()) as control:
        users, _ = await UserStore(control.pool).page(0, 10_000)
    return [f"{user.id}\t{user.global_role}\t{user.email}" for user in users]


def add_command(args: argparse.Namespace) -> int:
    try:
        print(asyncio.run(_add(args, _password())))
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def list_command(args: argparse.Namespace) -> int:
    for line in asyncio.run(_list(args)):
        print(line)
    return 0


def add_parsers(subparsers) -> None:
    users = subparsers.add_parser("users", help="users of the web UI")
    commands = users.add_subparsers(dest="users_command", required=True)
    add = commands.add_parser("add", help="create a user (the first one: --role owner)")
    add.add_argument("email")
    add.add_argument("--role", choices=("owner", "administrator", "user"), default="user", help="global role")
    add.set_defaults(handler=add_command)
    listing = commands.add_parser("list", help="the users with their global roles")
    listing.set_defaults(handler=list_command)
