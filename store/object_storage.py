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
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.fs as pafs

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
READ_PIECE_BYTES = 64 * 2**20  # a larger file is read in pieces of this size, in parallel
READ_THREADS = 8


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


def read_uri(uri: str) -> bytes | bytearray | None:
    """The bytes of the file at ``uri`` (a bytearray when read in pieces), or None when there is none.

    Read as a random-access file of known size: one read per ``READ_PIECE_BYTES`` piece, which an
    object store answers with one ranged GET, the pieces of a large file in parallel. (Read as a
    stream, pyarrow fetches an object of unknown size in 256 KiB reads, one GET each: a 57 MiB saved
    index took 228 sequential GETs, 10-20 s from a local S3 server that copies the whole object for
    each range, instead of 0.3 s.)
    """
    filesystem, path = filesystem_for(uri)
    try:
        with filesystem.open_input_file(path) as file:
            return _read_whole(file)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
            return None
        raise


def _read_whole(file) -> bytes | bytearray:
    """All bytes of an open random-access ``file``, large ones in parallel pieces."""
    size = file.size()
    if size <= READ_PIECE_BYTES:
        return file.read_at(size, 0)
    whole = bytearray(size)

    def read_piece(offset: int) -> None:
        length = min(READ_PIECE_BYTES, size - offset)
        piece = file.read_at(length, offset)
        if len(piece) != length:
            raise OSError(f"short read: {len(piece)} of {length} bytes at {offset}")
        whole[offset:offset + length] = piece

    offsets = range(0, size, READ_PIECE_BYTES)
    with ThreadPoolExecutor(min(READ_THREADS, len(offsets))) as pool:
        list(pool.map(read_piece, offsets))
    return whole


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
