"""A migration's swap: a shard's table replaced by re-embedded copies of the faces it holds now.

The source table holds copies made while the shard kept serving: faces deleted here since are left
out, renamed subjects keep their current name, and faces added here since (absent from the source)
stop the swap, so that the caller copies them first.
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa

from faceindex.rows import ShardRows
from store.faces import FaceTable


def replace_rows(table: FaceTable, source_table: str, rows: ShardRows) -> list[str]:
    """Overwrite ``table`` (one commit) with the rows of ``source_table`` as they are held now in
    ``rows``; or, when the source lacks faces held here, change nothing and return their ids."""
    source = FaceTable.open(table.db_uri, source_table, rows.dim, read_consistency_interval=timedelta(0))
    copied = set(source.face_ids())
    missing = [face_id for face_id in rows.ids if face_id not in copied]
    if missing:
        return missing
    table.overwrite(_as_held_now(batch, rows) for batch in source.batches())
    return []


def _as_held_now(batch: pa.RecordBatch, rows: ShardRows) -> pa.RecordBatch:
    """``batch`` without the faces no longer held in ``rows``, with their current subjects."""
    ids = batch.column("face_id").to_pylist()
    keep = [i for i, face_id in enumerate(ids) if face_id in rows.rows]
    subjects = [rows.subject(rows.rows[ids[i]]) for i in keep]
    batch = batch.take(pa.array(keep, pa.int64()))
    column = batch.schema.get_field_index("subject")
    return batch.set_column(column, batch.schema.field(column), pa.array(subjects, pa.string()))
