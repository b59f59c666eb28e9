"""A lean HTTP load generator for the serving benchmarks, run in a process of its own.

Each client keeps one HTTP/1.1 connection open and sends requests built once up front (multipart
``file`` bodies), so the generator costs about a millisecond of CPU per request on the machine it
shares with the server (an httpx client costs three to four times that). Besides the latencies it
reports its own CPU time, which the benchmark counts with the server's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import numpy as np

BOUNDARY = "rayfaces-bench-boundary"


def build_request(host: str, path: str, params: dict, api_key: str, image: bytes) -> bytes:
    """A complete ``POST`` of ``image`` as the multipart field ``file``."""
    target = f"{path}?{urlencode(params)}" if params else path
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="image.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST {target} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {api_key}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def build_bodyless(method: str, host: str, path: str, api_key: str, params: dict | None = None) -> bytes:
    """A complete ``GET`` or ``DELETE`` without a body."""
    target = f"{path}?{urlencode(params)}" if params else path
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {api_key}\r\n\r\n".encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one response (Content-Length or chunked)."""
    status = int((await reader.readline()).split()[1])
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    body = bytearray()
    while size := int((await reader.readline()).split(b";")[0], 16):
        body += await reader.readexactly(size)
        await reader.readline()
    await reader.readline()
    return status, bytes(body)


async def _drive(url: str, requests: list[bytes], clients: int, seconds: float) -> list[float]:
    parts = urlsplit(url)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        index = offset
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(requests[index % len(requests)])
                status, body = await read_response(reader)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
                latencies.append(time.perf_counter() - started)
                index += clients
        finally:
            writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies


def _load_process(queue, url: str, requests: list[bytes], clients: int, seconds: float) -> None:
    latencies = asyncio.run(_drive(url, requests, clients, seconds))
    queue.put((latencies, time.process_time()))


@dataclass
class LoadResult:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    client_cpu_s: float


def run_load(url: str, api_key: str, path: str, bodies: list[tuple[dict, bytes]], clients: int,
             seconds: float) -> LoadResult:
    """``clients`` concurrent clients posting ``(params, image)`` bodies in turn for ``seconds``."""
    host = urlsplit(url).netloc
    requests = [build_request(host, path, params, api_key, image) for params, image in bodies]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_load_process, args=(queue, url, requests, clients, seconds))
    process.start()
    latencies, cpu = queue.get(timeout=seconds + 300)
    process.join()
    latencies = np.array(latencies)
    return LoadResult(len(latencies), len(latencies) / seconds, float(np.percentile(latencies, 50) * 1000),
                      float(np.percentile(latencies, 99) * 1000), cpu)
