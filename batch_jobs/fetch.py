"""The read stage of enrollment: skip inputs already enrolled, read the bytes of the others.

Runs as Ray Data tasks. An input whose first face id (see :mod:`batch_jobs.face_ids`) is held by the
service's index shards was enrolled by an earlier run and is not read again: this is what makes a
re-run, or a run after a crash, do only the missing work. Files are read with a thread pool (the
filesystems release the GIL), with the byte limit checked before the data is read.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from actors.index_shard import ShardGroup
from batch_jobs.face_ids import face_id
from batch_jobs.locations import Location, Locator
from batch_jobs.outcomes import Outcome
from batch_jobs.sources import INPUT_SCHEMA
from facecore.errors import ImageTooLarge
from faces_settings import Settings
from outbound import redact
from store.control import Service

READ_THREADS = 16
FETCHED_SCHEMA = INPUT_SCHEMA.append(pa.field("image", pa.binary())).append(pa.field("status", pa.string()))


def read_image(location: Location, max_bytes: int) -> bytes:
    """The file's bytes; :class:`ImageTooLarge` (before reading) when it exceeds ``max_bytes``."""
    with location.filesystem.open_input_file(location.path) as handle:
        size = handle.size()
        if size > max_bytes:
            raise ImageTooLarge(f"the image is {size} bytes; the limit is {max_bytes} bytes")
        return handle.read()


def _read(locator: Locator, source: str, max_bytes: int) -> tuple[bytes | None, str | None]:
    try:
        return read_image(locator.locate(source), max_bytes), None
    except ImageTooLarge as exc:
        return None, str(exc)
    except Exception as exc:  # any filesystem's error, or a refused location: reported, the job goes on
        return None, f"cannot read the file: {redact(str(exc))}"


def fetch_images(batch: pa.Table, *, locator: Locator, service: Service, settings: Settings) -> pa.Table:
    """Input rows plus ``image`` (bytes, or null) and ``status`` (null: to be processed)."""
    sources = batch.column("source").to_pylist()
    given = batch.column("face_id").to_pylist()
    reasons = batch.column("reason").to_pylist()
    statuses: list[str | None] = [None if reason is None else Outcome.INVALID.value for reason in reasons]
    images: list[bytes | None] = [None] * len(sources)

    pending = [i for i, status in enumerate(statuses) if status is None]
    first_ids = {i: face_id(service.id, sources[i], 0, given[i]) for i in pending}
    shards = ShardGroup.of(service, settings)
    stored = asyncio.run(shards.existing(list(first_ids.values()))) if pending else set()
    for i in pending:
        if first_ids[i] in stored:
            statuses[i] = Outcome.ALREADY_ENROLLED.value

    to_read = [i for i in pending if statuses[i] is None]
    if to_read:
        with ThreadPoolExecutor(min(READ_THREADS, len(to_read))) as pool:
            results = list(pool.map(lambda i: _read(locator, sources[i], settings.max_upload_bytes), to_read))
        for i, (data, error) in zip(to_read, results):
            images[i] = data
            if error is not None:
                statuses[i], reasons[i] = Outcome.INVALID.value, error
    return pa.table({"source": sources, "subject": batch.column("subject"), "face_id": given, "reason": reasons,
                     "image": pa.array(images, pa.binary()), "status": statuses}, schema=FETCHED_SCHEMA)
