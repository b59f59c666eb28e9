"""Files every node of a cluster reaches: a local folder, or a prefix on object storage.

One root URI (``FACES_MEDIA_URI``): a local path (one machine, or a shared mount) or
``s3://bucket/prefix`` (any S3-compatible store), or any other scheme pyarrow opens (``gs://``,
``hdfs://``). S3 takes its credentials, region and endpoint from the environment that LanceDB reads
too: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT``) and ``AWS_ALLOW_HTTP=true`` for a plain-HTTP endpoint such as a local MinIO.
"""

from __future__ import annotations

import os
import posixpath
import re

import pyarrow as pa
import pyarrow.fs as pafs

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def uri_scheme(uri: str) -> str:
    """The scheme of a URI, lower case; empty for a local path."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else ""


def s3_options_from_environment() -> dict:
    """pyarrow ``S3FileSystem`` options from the variables LanceDB and the AWS SDKs read."""
    options: dict = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT")
    if endpoint:
        scheme, _, address = endpoint.rpartition("://")
        options["endpoint_override"] = address.rstrip("/")
        options["scheme"] = scheme or "https"
    if os.environ.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true", "yes"):
        options["scheme"] = "http"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return options


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``uri`` and the path on it (a local path is made absolute).

    A plain ``s3://bucket/key`` uses :func:`s3_options_from_environment`; options written in the URI
    (``?endpoint_override=...``) are pyarrow's own and win.
    """
    scheme = uri_scheme(uri)
    if not scheme or scheme == "file":
        local = uri[len("file://"):] if scheme == "file" else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))
    if scheme == "s3" and "?" not in uri:
        return pafs.S3FileSystem(**s3_options_from_environment()), uri[len("s3://"):].rstrip("/")
    filesystem, path = pafs.FileSystem.from_uri(uri)
    return filesystem, path.rstrip("/")


def join_uri(root: str, *parts: str) -> str:
    """``root`` (a local path or a URI) with path parts appended."""
    return posixpath.join(root.rstrip("/"), *parts) if uri_scheme(root) else os.path.join(root, *parts)


def read_uri(uri: str) -> bytes | None:
    """The bytes of the file at ``uri``, or None when there is none."""
    filesystem, path = filesystem_for(uri)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
            return None
        raise


def write_uri(uri: str, data: bytes) -> None:
    """Write ``data`` at ``uri`` so that readers see the old file or the new one, never a part.

    An object store's put is atomic; a local file is written beside its target and renamed.
    """
    filesystem, path = filesystem_for(uri)
    local = isinstance(filesystem, pafs.LocalFileSystem)
    if local:  # an object store has no folders to make
        filesystem.create_dir(posixpath.dirname(path), recursive=True)
    target = f"{path}.tmp{os.getpid()}" if local else path
    with filesystem.open_output_stream(target) as stream:
        stream.write(data)
    if local:
        os.replace(target, path)


def delete_uri(uri: str) -> None:
    """Remove the file at ``uri``; a missing file is fine."""
    filesystem, path = filesystem_for(uri)
    try:
        filesystem.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if "not found" not in str(exc).lower() and "no such file" not in str(exc).lower():
            raise


def delete_tree(uri: str) -> None:
    """Remove the folder at ``uri`` and everything under it; a missing folder is fine."""
    filesystem, path = filesystem_for(uri)
    try:
        if filesystem.get_file_info(path).type == pafs.FileType.Directory:
            filesystem.delete_dir(path)
    except (FileNotFoundError, pa.ArrowInvalid):
        pass


def child_names(uri: str) -> list[str]:
    """Names of the entries directly under the folder at ``uri`` (none when it is missing)."""
    filesystem, path = filesystem_for(uri)
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except FileNotFoundError:
        return []
    return [posixpath.basename(entry.path) for entry in entries]


def delete_empty_folder(uri: str) -> None:
    """Remove the local folder at ``uri`` if it is empty; object stores have no folders to remove."""
    filesystem, path = filesystem_for(uri)
    if isinstance(filesystem, pafs.LocalFileSystem):
        try:
            os.rmdir(path)
        except OSError:  # not empty, or already gone
            pass
