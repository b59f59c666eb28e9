"""The input rows of an enrollment job as a Ray Dataset: a folder tree or a manifest.

An input row is ``source`` (canonical URI, see :mod:`batch_jobs.locations`), ``subject``,
``face_id`` (optional, from a manifest) and ``reason`` (set when the row itself is unusable: an
image outside any subject folder, a manifest row without a subject).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq
import ray.data
from ray.data import Dataset, Datasource, ReadTask
from ray.data.block import BlockMetadata

from batch_jobs.errors import JobInputError
from batch_jobs.locations import Location, Locator, is_image_name

INPUT_SCHEMA = pa.schema([
    pa.field("source", pa.string()),
    pa.field("subject", pa.string()),
    pa.field("face_id", pa.string()),
    pa.field("reason", pa.string()),
])
MANIFEST_COLUMNS = ("path", "uri", "subject", "face_id")
NOT_IN_SUBJECT_FOLDER = "the image is not inside a subject folder (expected ROOT/SUBJECT/IMAGE)"


def _rows(sources: list[str], subjects: list[str], reasons: list[str | None]) -> pa.Table:
    return pa.table({"source": sources, "subject": subjects, "face_id": [None] * len(sources),
                     "reason": reasons}, schema=INPUT_SCHEMA)


class TreeListing(Datasource):
    """The images of a folder-per-subject tree (``ROOT/SUBJECT/.../IMAGE``), listed lazily.

    One read task walks the tree subject folder by subject folder and yields blocks of
    ``rows_per_block`` rows, so the listing streams (memory flat), never passes through the driver,
    and the read stage gets one small block per task. Images directly under the root are listed with
    a reason (they have no subject); files whose names do not end in an image extension and hidden
    entries are ignored.
    """

    def __init__(self, root: Location, rows_per_block: int):
        self.root = root
        self.rows_per_block = rows_per_block

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        metadata = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
        return [ReadTask(self._read, metadata, schema=INPUT_SCHEMA)]

    def _uri(self, path: str) -> str:
        return f"{self.root.scheme}://{path}" if self.root.scheme else path

    def _walk(self) -> Iterator[tuple[str, str, str | None]]:
        filesystem = self.root.filesystem
        top = sorted(filesystem.get_file_info(pafs.FileSelector(self.root.path)), key=lambda info: info.path)
        for entry in top:
            if entry.base_name.startswith("."):
                continue
            if entry.type == pafs.FileType.File and is_image_name(entry.path):
                yield self._uri(entry.path), "", NOT_IN_SUBJECT_FOLDER
            elif entry.type == pafs.FileType.Directory:
                inside = filesystem.get_file_info(pafs.FileSelector(entry.path, recursive=True))
                for info in sorted(inside, key=lambda info: info.path):
                    hidden = any(part.startswith(".") for part in info.path[len(entry.path):].split("/"))
                    if info.type == pafs.FileType.File and is_image_name(info.path) and not hidden:
                        yield self._uri(info.path), entry.base_name, None

    def count(self) -> int:
        """How many input rows the listing yields (the tree walked once, in this process)."""
        return sum(1 for _ in self._walk())

    def _read(self) -> Iterator[pa.Table]:
        sources: list[str] = []
        subjects: list[str] = []
        reasons: list[str | None] = []
        for source, subject, reason in self._walk():
            sources.append(source)
            subjects.append(subject)
            reasons.append(reason)
            if len(sources) >= self.rows_per_block:
                yield _rows(sources, subjects, reasons)
                sources, subjects, reasons = [], [], []
        if sources:
            yield _rows(sources, subjects, reasons)


def manifest_format(path: str) -> str:
    """``csv``, ``json`` (JSON lines) or ``parquet``, by extension."""
    extension = posixpath.splitext(path)[1].lower()
    if extension == ".csv":
        return "csv"
    if extension in (".jsonl", ".ndjson", ".json"):
        return "json"
    return "parquet"


def _manifest_batches(filesystem: pafs.FileSystem, path: str) -> Iterator[pa.RecordBatch]:
    """A manifest file's rows, streamed (CSV columns are read as strings)."""
    file_format = manifest_format(path)
    if file_format == "parquet":
        parquet = pq.ParquetFile(filesystem.open_input_file(path))
        columns = [name for name in parquet.schema_arrow.names if name in MANIFEST_COLUMNS]
        yield from parquet.iter_batches(columns=columns)
    elif file_format == "csv":
        types = {name: pa.string() for name in MANIFEST_COLUMNS}
        yield from pacsv.open_csv(filesystem.open_input_stream(path),
                                  convert_options=pacsv.ConvertOptions(column_types=types))
    else:
        yield from pajson.open_json(filesystem.open_input_stream(path))


class ManifestListing(Datasource):
    """The rows of a manifest (one file, or a folder of them), streamed: one read task per file.

    Each task reads its file with pyarrow's streaming reader and yields input rows in blocks of
    ``rows_per_block``, so a manifest of millions of rows never sits in memory and the read stage
    gets small blocks to work on in parallel.
    """

    def __init__(self, manifest: Location, rows_per_block: int):
        self.manifest = manifest
        self.rows_per_block = rows_per_block
        folder = manifest.info().type == pafs.FileType.Directory
        self.locator = Locator(manifest, base_is_folder=folder)
        if folder:
            found = manifest.filesystem.get_file_info(pafs.FileSelector(manifest.path, recursive=True))
            self.files = sorted(info.path for info in found if info.type == pafs.FileType.File
                                and not info.base_name.startswith((".", "_")))
        else:
            self.files = [manifest.path]

    def columns(self) -> list[str]:
        """The columns of the first file (reads its first batch only)."""
        if not self.files:
            return []
        first = next(_manifest_batches(self.manifest.filesystem, self.files[0]), None)
        return [] if first is None else first.schema.names

    def count(self) -> int:
        """How many rows the manifest has: Parquet files from their footers, others streamed through
        pyarrow's readers (no row is normalised)."""
        filesystem = self.manifest.filesystem
        return sum(pq.ParquetFile(filesystem.open_input_file(path)).metadata.num_rows
                   if manifest_format(path) == "parquet"
                   else sum(batch.num_rows for batch in _manifest_batches(filesystem, path))
                   for path in self.files)

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        return [ReadTask(lambda path=path: self._read(path),
                         BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(path,)),
                         schema=INPUT_SCHEMA)
                for path in self.files]

    def _read(self, path: str) -> Iterator[pa.Table]:
        row = 0
        name = self.locator.canonical(path) if self.manifest.scheme else path
        for batch in _manifest_batches(self.manifest.filesystem, path):
            for start in range(0, batch.num_rows, self.rows_per_block):
                part = pa.Table.from_batches([batch.slice(start, self.rows_per_block)])
                yield normalize_manifest(part, self.locator, f"{name}#row=", row)
                row += part.num_rows


def _as_strings(column: pa.ChunkedArray) -> list[str | None]:
    """A column as stripped strings (numbers too: a subject may be an employee number); empty is None."""
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    return [None if value is None else value.strip() or None for value in column.to_pylist()]


def normalize_manifest(batch: pa.Table, locator: Locator, row_prefix: str, first_row: int) -> pa.Table:
    """Manifest rows (``path`` or ``uri``, ``subject``, optional ``face_id``) as input rows.

    A row without a path is named ``<row_prefix><row number>`` (from 1) in the report.
    """
    paths = _as_strings(batch.column("path" if "path" in batch.column_names else "uri"))
    subjects = _as_strings(batch.column("subject"))
    given = _as_strings(batch.column("face_id")) if "face_id" in batch.column_names else [None] * len(paths)
    sources, reasons = [], []
    for row, (path, subject) in enumerate(zip(paths, subjects), start=first_row + 1):
        sources.append(locator.canonical(path) if path is not None else f"{row_prefix}{row}")
        if path is None:
            reasons.append("the manifest row has no path")
        elif subject is None:
            reasons.append("the manifest row has no subject")
        else:
            reasons.append(None)
    return pa.table({"source": sources, "subject": [subject or "" for subject in subjects], "face_id": given,
                     "reason": reasons}, schema=INPUT_SCHEMA)


@dataclass(frozen=True)
class Inputs:
    """A job's input rows as a dataset, and their listing, which counts them without running a
    Ray Data pass over them (the job's progress needs the total before the first batch)."""

    dataset: Dataset
    listing: TreeListing | ManifestListing

    def count(self) -> int:
        return self.listing.count()


def tree_inputs(root: Location, rows_per_block: int) -> Inputs:
    """Input rows of a folder-per-subject tree (checked by :func:`batch_jobs.locations.check_input`)."""
    listing = TreeListing(root, rows_per_block)
    return Inputs(ray.data.read_datasource(listing, num_cpus=0, override_num_blocks=1), listing)


def manifest_inputs(manifest: Location, rows_per_block: int) -> Inputs:
    """Input rows of a CSV, JSON-lines or Parquet manifest (checked by ``check_input``).

    Raises :class:`JobInputError` when the manifest lacks the ``path`` (or ``uri``) or ``subject`` column.
    """
    listing = ManifestListing(manifest, rows_per_block)
    columns = set(listing.columns())
    if "subject" not in columns or not columns & {"path", "uri"}:
        raise JobInputError(f"manifest {manifest.uri} needs a 'path' (or 'uri') and a 'subject' column; "
                            f"it has {sorted(columns)}")
    return Inputs(ray.data.read_datasource(listing, num_cpus=0, override_num_blocks=max(1, len(listing.files))),
                  listing)
