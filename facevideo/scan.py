"""Process one source from start to end as fast as possible (``faces video scan``, the benchmark)."""

from __future__ import annotations

from facevideo.events import VideoEvent
from facevideo.processor import StreamProcessor
from facevideo.source import FrameReader


async def scan_source(url: str, processor: StreamProcessor) -> list[VideoEvent]:
    """Every event of the source, in order, including those of tracks still open at its end.

    Raises :class:`facevideo.source.SourceError` when the source cannot be read.
    """
    reader = FrameReader(url, processor.options.max_fps, realtime=False)
    await reader.start()
    events: list[VideoEvent] = []
    try:
        while (frame := await reader.next()) is not None:
            events.extend(await processor.process(frame))
    finally:
        reader.stop()
    events.extend(await processor.finish())
    return events
