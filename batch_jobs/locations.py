"""Where bulk-job inputs live: local paths and URIs resolved to pyarrow filesystems (no Ray here).

Any location pyarrow's filesystems open (local paths, ``s3://``, ``gs://``, ``hdfs://``, ...) works,
and fsspec's for other schemes. Options go in the URI, e.g.
``s3://bucket/manifest.csv?endpoint_override=minio:9000&scheme=http``; credentials come from the usual
environment (``AWS_ACCESS_KEY_ID``, ...) or the URI, and so does a plain ``s3://`` URI's endpoint
(``AWS_ENDPOINT_URL``, see :mod:`store.object_storage`). A resolved :class:`Location` pickles with its
filesystem, so paths inside a manifest that use the input's scheme share its options in every task.

A canonical URI is an absolute local path, or ``scheme://bucket/key`` without credentials or options.

Jobs started through the API are confined by the outbound policy (:func:`allowed`): local paths
only under ``FACES_FILE_ROOTS`` and never in the data dir, the schemes of :data:`JOB_SCHEMES`, and
object-store endpoints and HDFS hosts that resolve to public addresses or ``FACES_ALLOWED_NETWORKS``;
the input and report are checked when the job is asked for and again when it runs, and every input
row when it is read. The ``faces enroll`` command line runs with its user's own rights, unconfined.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from batch_jobs.errors import JobInputError
from outbound import OutboundPolicy, OutboundRefused, redact
from store.object_storage import filesystem_for

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
JOB_SCHEMES = frozenset({"file", "s3", "gs", "gcs", "hdfs"})


def _scheme(value: str) -> str:
    match = _SCHEME.match(value)
    return match.group(1).lower() if match else ""


@dataclass(frozen=True)
class Location:
    """A file or folder: its filesystem, its path there and its canonical URI.

    ``address`` is what :func:`resolve` maps back to this location: the absolute path of a local
    file, else the URI as given, options and all (what a job records to run later elsewhere).
    """

    filesystem: pafs.FileSystem = field(repr=False)
    path: str
    uri: str
    address: str = field(default="", repr=False)

    @property
    def scheme(self) -> str:
        """The URI scheme; empty for a local path."""
        return _scheme(self.uri)

    def info(self) -> pafs.FileInfo:
        return self.filesystem.get_file_info(self.path)


def allowed(uri: str, policy: OutboundPolicy | None) -> str:
    """``uri`` if ``policy`` (None: unconfined) lets a job open it, a local path resolved;
    :class:`JobInputError` with the reason otherwise."""
    if policy is None:
        return uri
    try:
        return policy.check(uri, JOB_SCHEMES, admin=True)
    except OutboundRefused as exc:
        raise JobInputError(redact(str(exc))) from None


def resolve(uri: str) -> Location:
    """The location of a local path (relative to the working directory) or of a URI."""
    scheme = _scheme(uri)
    if not scheme or scheme == "file":
        path = os.path.abspath(os.path.expanduser(uri[len("file://"):] if scheme == "file" else uri))
        return Location(pafs.LocalFileSystem(), path, path, path)
    try:
        filesystem, path = filesystem_for(uri)  # plain s3:// takes its endpoint from the environment
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a scheme pyarrow lacks: try fsspec
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(uri)
        except (ImportError, ValueError) as exc:
            raise JobInputError(redact(f"no filesystem for {uri!r}: {exc}")) from None
        filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    path = path.rstrip("/")
    return Location(filesystem, path, f"{scheme}://{path}", uri)


class Locator:
    """Resolves the paths of a job's rows against its input location.

    A relative path is taken relative to the input's folder (the manifest's folder, or the tree's
    root); a URI of the input's scheme uses the input's filesystem (and so its options and
    credentials); other URIs get their own filesystem, resolved once per ``scheme://host``.
    """

    def __init__(self, base: Location, base_is_folder: bool, policy: OutboundPolicy | None = None):
        self.base = base
        self.folder = base.path if base_is_folder else posixpath.dirname(base.path)
        self.policy = policy
        self._filesystems: dict[str, pafs.FileSystem] = {}

    def canonical(self, value: str) -> str:
        """The canonical URI of a row's path, without any I/O."""
        scheme = _scheme(value)
        if scheme == "file":
            value, scheme = value[len("file://"):], ""
        if not scheme:
            if value.startswith("/"):
                return posixpath.normpath(value)
            path = posixpath.normpath(posixpath.join(self.folder, value))
            return f"{self.base.scheme}://{path}" if self.base.scheme else path
        parts = urlsplit(value)
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return f"{scheme}://{host}{parts.path}"

    def locate(self, value: str) -> Location:
        """The location of a row's path; may resolve (and then cache) a filesystem for a new host.
        :class:`JobInputError` for a location the policy refuses (a local file: checked each time)."""
        uri = self.canonical(value)
        scheme = _scheme(uri)
        if not scheme:
            path = allowed(uri, self.policy)
            return Location(pafs.LocalFileSystem(), path, uri, uri)
        path = uri[len(scheme) + 3:]
        if scheme == self.base.scheme:
            return Location(self.base.filesystem, path, uri, uri)
        host = "/".join(uri.split("/", 3)[:3])
        if host not in self._filesystems:
            self._filesystems[host] = resolve(allowed(value, self.policy)).filesystem
        return Location(self._filesystems[host], path, uri, value)


def is_image_name(path: str) -> bool:
    """Whether the file name ends in an image extension (``.jpg``, ``.png``, ...)."""
    return posixpath.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def check_input(uri: str, manifest: bool, policy: OutboundPolicy | None = None) -> Location:
    """Resolve a job's input and check that ``policy`` allows it, that it exists and is of the right kind.

    Raises :class:`JobInputError` for a refused, unreachable or missing input, or a file given as a tree.
    """
    location = resolve(allowed(uri, policy))
    try:
        kind = location.info().type
    except OSError as exc:
        raise JobInputError(f"cannot reach {location.uri}: {redact(str(exc))}") from None
    if kind == pafs.FileType.NotFound:
        raise JobInputError(f"{'manifest' if manifest else 'folder'} {location.uri} not found")
    if not manifest and kind != pafs.FileType.Directory:
        raise JobInputError(f"{location.uri} is a file, not a folder of subject folders "
                            "(pass --manifest if it is a manifest)")
    return location
