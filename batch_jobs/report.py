"""The report of an enrollment job: one row per input, written as it goes, and the closing summary.

Parquet by default; JSON lines when the name ends in ``.jsonl``, ``.ndjson`` or ``.json``. Written to
any location :mod:`batch_jobs.locations` resolves (a local path or e.g. ``s3://...``), in row groups, so
a report of millions of inputs never sits in memory.
"""

from __future__ import annotations

import json
import posixpath

import pyarrow as pa
import pyarrow.parquet as pq

from batch_jobs.locations import resolve
from batch_jobs.outcomes import Outcome

REPORT_SCHEMA = pa.schema([
    pa.field("source", pa.string()),
    pa.field("subject", pa.string()),
    pa.field("status", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("faces", pa.int32()),
    pa.field("face_ids", pa.list_(pa.string())),
])
JSON_EXTENSIONS = (".jsonl", ".ndjson", ".json")


class ReportWriter:
    """Appends report rows (:data:`REPORT_SCHEMA`) to a Parquet or JSON-lines file."""

    def __init__(self, uri: str):
        location = resolve(uri)
        self.uri = location.uri
        location.filesystem.create_dir(posixpath.dirname(location.path), recursive=True)
        self._stream = location.filesystem.open_output_stream(location.path)
        self._json = _is_json_path(location.path)
        self._parquet = None if self._json else pq.ParquetWriter(self._stream, REPORT_SCHEMA)

    def write(self, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        rows = rows.select(REPORT_SCHEMA.names).cast(REPORT_SCHEMA)
        if self._parquet is not None:
            self._parquet.write_table(rows)
        else:
            lines = "".join(json.dumps(row) + "\n" for row in rows.to_pylist())
            self._stream.write(lines.encode("utf-8"))

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self._stream.close()


def _is_json_path(path: str) -> bool:
    return path.lower().endswith(JSON_EXTENSIONS)


def is_json_report(uri: str) -> bool:
    """Whether the report at ``uri`` is JSON lines (else Parquet): by its path, not its query string."""
    return _is_json_path(resolve(uri).path)


def open_report(uri: str) -> pa.NativeFile:
    """A stream of the report's bytes (``FileNotFoundError`` when it is gone)."""
    location = resolve(uri)
    return location.filesystem.open_input_stream(location.path)


def read_report(uri: str) -> pa.Table:
    """A report written by :class:`ReportWriter` (tests, tools)."""
    with open_report(uri) as stream:
        data = stream.read()
    if is_json_report(uri):
        rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line]
        return pa.Table.from_pylist(rows, schema=REPORT_SCHEMA)
    return pq.read_table(pa.BufferReader(data))


def summary(counts: dict[str, int], seconds: float) -> str:
    """A few lines for the end of a job: inputs per outcome, faces stored, speed."""
    inputs = sum(counts.get(outcome.value, 0) for outcome in Outcome)
    lines = [f"{inputs} inputs in {seconds:.1f} s ({inputs / seconds if seconds else 0.0:.1f} images/s)"]
    lines += [f"  {outcome.value:<17} {counts.get(outcome.value, 0)}" for outcome in Outcome]
    lines.append(f"  faces stored      {counts.get('faces', 0)}")
    return "\n".join(lines)
