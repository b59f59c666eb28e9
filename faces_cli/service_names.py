"""One way to name a service on the command line: its id, ``APP/SERVICE``, or a name unique to one
application. Every command that takes ``--service`` adds it with :func:`add_service_argument` and
resolves it with :func:`resolve_service`."""

from __future__ import annotations

import argparse

from batch_jobs.errors import JobInputError
from store.control import ControlPlane, Service
from store.errors import NotFound

SERVICE_HELP = "recognition service: its id, APP/SERVICE, or a service name unique to one application"


def add_service_argument(parser: argparse.ArgumentParser, required: bool = True, help: str = SERVICE_HELP) -> None:
    parser.add_argument("--service", required=required, default=None, help=help)


async def resolve_service(control: ControlPlane, ref: str) -> Service:
    """The recognition service named by ``ref``; :class:`JobInputError` when none or several match."""
    from batch_jobs.runtime import require_recognition  # imports Ray: only commands that resolve a service pay

    ref = ref.strip()
    if ref.isdigit():
        try:
            service = await control.get_service(int(ref))
        except NotFound:
            raise JobInputError(f"service {ref} not found") from None
    elif "/" in ref:
        app_name, service_name = ref.split("/", 1)
        apps = [app for app in await control.list_applications() if app.name == app_name]
        matches = [s for app in apps for s in await control.list_services(app.id) if s.name == service_name]
        if not matches:
            raise JobInputError(f"no service {service_name!r} in an application named {app_name!r}")
        service = matches[0]
    else:
        matches = [s for s in await control.list_all_services() if s.name == ref]
        if not matches:
            raise JobInputError(f"no service named {ref!r}")
        if len(matches) > 1:
            ids = ", ".join(str(s.id) for s in matches)
            raise JobInputError(f"{len(matches)} applications have a service named {ref!r} (ids {ids}): "
                                "name it as APP/SERVICE or by its id")
        service = matches[0]
    return require_recognition(service)
