"""The outbound policy: which local files and network hosts the platform may open for a caller.

- **Schemes**: each use names the schemes it accepts (video sources, webhooks, job storage); a local
  path (absolute, or ``file://``) counts as the scheme ``file``.
- **Local files** only for the admin, only inside the configured roots (``FACES_FILE_ROOTS``) and
  never inside the platform's own folders (the data dir): the path is resolved first (symlinks,
  ``..``), so no link or detour leads out. With no roots configured, no local file is allowed.
- **Network hosts** are resolved, and every address they resolve to must be publicly routable:
  loopback, private, link-local, multicast, unspecified, reserved and shared addresses are refused
  unless a network of ``FACES_ALLOWED_NETWORKS`` contains them; cloud metadata addresses
  (169.254.169.254 and the like) only when listed there as single addresses. Object stores
  (``s3://``, ``gs://``) name a bucket, not a host: their ``endpoint_override`` is checked.

A refusal is :class:`OutboundRefused`: its message is the detail (for the admin and the logs), its
``public`` text says nothing about the host or the file system (for tenants), and ``retry`` marks a
name that did not resolve (it may later). Callers check when a location is given and again right
before they open it (a name may resolve elsewhere by then).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from outbound.redact import redact

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# AWS, GCP, Azure, Oracle, OpenStack (IPv4 and AWS's IPv6), AWS ECS task metadata, Alibaba, Oracle (legacy).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200", "192.0.0.192"))
OBJECT_STORE_SCHEMES = frozenset({"s3", "gs", "gcs"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_KINDS = (("is_unspecified", "unspecified"), ("is_loopback", "loopback"), ("is_link_local", "link-local"),
          ("is_multicast", "multicast"), ("is_private", "private"), ("is_reserved", "reserved"))

PUBLIC_FILE = "local files are not allowed here; give a network URL"
PUBLIC_HOST = "the URL's host is not allowed: it must resolve to public addresses"


class OutboundRefused(ValueError):
    """The policy refuses a location. ``str()``: the detail; ``public``: what a tenant may see."""

    def __init__(self, detail: str, public: str, retry: bool = False):
        super().__init__(detail)
        self.public = public
        self.retry = retry


def scheme_of(location: str) -> str:
    """The lower-case scheme of a URL; ``file`` for a local path."""
    if "://" not in location:
        return "file"
    return urlsplit(location).scheme.lower() or "file"


def _unwrapped(address: Address) -> Address:
    """The IPv4 address inside an IPv4-mapped, NAT64, 6to4 or Teredo IPv6 address, else the address."""
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return address


def address_kind(address: Address) -> str | None:
    """Why ``address`` is not a public one (``"loopback"``, ``"cloud metadata"``...), or None."""
    address = _unwrapped(address)
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    for attribute, kind in _KINDS:
        if getattr(address, attribute):
            return kind
    return None if address.is_global else "not publicly routable"


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@dataclass(frozen=True)
class OutboundPolicy:
    """``file_roots``: folders the admin may name files in; ``allowed_networks``: non-public networks
    that may be reached; ``forbidden``: folders no caller may name a file in (the data dir)."""

    file_roots: tuple[Path, ...] = ()
    allowed_networks: tuple[Network, ...] = ()
    forbidden: tuple[Path, ...] = ()

    @classmethod
    def build(cls, file_roots: Iterable[str | Path] = (), allowed_networks: Iterable[str] = (),
              forbidden: Iterable[str | Path] = ()) -> "OutboundPolicy":
        """A policy from settings; :class:`ValueError` for a network that is not a CIDR."""
        networks = []
        for network in allowed_networks:
            try:
                networks.append(ipaddress.ip_network(str(network).strip(), strict=False))
            except ValueError:
                raise ValueError(f"allowed network {network!r} is not an address or a CIDR such as "
                                 "10.0.0.0/8") from None
        return cls(tuple(Path(os.path.realpath(root)) for root in file_roots), tuple(networks),
                   tuple(Path(os.path.realpath(folder)) for folder in forbidden))

    # --- local files -------------------------------------------------------------------------

    def local_path(self, path: str, *, admin: bool) -> Path:
        """The resolved path of a local file the caller may open; :class:`OutboundRefused` otherwise."""
        if not admin:
            raise OutboundRefused("local files are only for the admin token", PUBLIC_FILE)
        resolved = Path(os.path.realpath(os.path.expanduser(path)))
        if not self.file_roots:
            raise OutboundRefused(f"{path} is a local file, and no file roots are configured (FACES_FILE_ROOTS)",
                                  PUBLIC_FILE)
        if any(_within(resolved, folder) for folder in self.forbidden):
            raise OutboundRefused(f"{path} is inside the platform's data dir", PUBLIC_FILE)
        if not any(_within(resolved, root) for root in self.file_roots):
            roots = ", ".join(str(root) for root in self.file_roots)
            raise OutboundRefused(f"{path} is outside the file roots ({roots}; FACES_FILE_ROOTS)", PUBLIC_FILE)
        return resolved

    # --- network hosts -----------------------------------------------------------------------

    def check_address(self, address: str, host: str) -> None:
        """Refuse an address that is not public, unless an allowed network holds it."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        kind = address_kind(ip)
        if kind is None:
            return
        if kind == "cloud metadata":
            allowed = any(network.num_addresses == 1 and ip in network for network in self.allowed_networks)
        else:
            allowed = any(ip in network or _unwrapped(ip) in network for network in self.allowed_networks)
        if not allowed:
            where = f"the host {host} is" if host == address else f"{host} resolves to {address},"
            raise OutboundRefused(f"{where} a {kind} address that FACES_ALLOWED_NETWORKS does not list", PUBLIC_HOST)

    def check_host(self, host: str, port: int | None = None) -> list[str]:
        """Resolve ``host`` and check every address; the addresses, for connecting to exactly these."""
        if not host:
            raise OutboundRefused("the URL has no host", PUBLIC_HOST)
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise OutboundRefused(f"cannot resolve {host}: {exc}", PUBLIC_HOST, retry=True) from None
        addresses = list(dict.fromkeys(info[4][0] for info in found))
        for address in addresses:
            self.check_address(address, host)
        return addresses

    # --- locations -----------------------------------------------------------------------------

    def check(self, location: str, schemes: Collection[str], *, admin: bool) -> str:
        """What to open for ``location`` if the policy allows it: a resolved path for a local file,
        the URL itself otherwise (its hosts checked). Blocks on name resolution."""
        value = location.strip()
        scheme = scheme_of(value)
        if scheme not in schemes:
            if scheme == "file":
                raise OutboundRefused(f"{value}: local files are not allowed here", PUBLIC_FILE)
            message = f"the scheme {scheme!r} is not allowed here (allowed: {', '.join(sorted(schemes))})"
            raise OutboundRefused(message, message)
        if scheme == "file":
            return str(self.local_path(value[len("file://"):] if value.lower().startswith("file://") else value,
                                       admin=admin))
        for host, port in hosts(value):
            self.check_host(host, port)
        return value


def hosts(url: str) -> list[tuple[str, int | None]]:
    """The network hosts a URL makes the platform connect to: its own host, or for an object store
    the ``endpoint_override`` option (none: the store's public endpoint)."""
    parts = urlsplit(url)
    if parts.scheme.lower() in OBJECT_STORE_SCHEMES:
        endpoints = parse_qs(parts.query).get("endpoint_override", [])
        return [_host_port(endpoint if "://" in endpoint else f"//{endpoint}") for endpoint in endpoints]
    return [_host_port(url)]


def _host_port(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    try:
        return parts.hostname or "", parts.port
    except ValueError:  # a port that is not a number
        raise OutboundRefused(f"{redact(url)}: the port is not a number", PUBLIC_HOST) from None
