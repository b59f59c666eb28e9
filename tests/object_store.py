"""A local S3-compatible server for tests: moto in server mode on a free loopback port.

The platform talks to it over the real S3 protocol (HTTP, signed requests), exactly as to a remote
object store; only the endpoint and the test credentials differ.

moto 5.2 answers a ranged GET by reading the whole object, copying it, and slicing the copy: its cost
grows with the object, not the range. LanceDB reads a table's files in ranges (at 1M faces, 90 ranged
GETs moved 4.7 GB through moto to send 0.52 GB), so reads from moto measured moto more than the
platform. The server here reads only the requested bytes of a plain ``bytes=first-last`` or
``bytes=first-`` range, as S3 and MinIO do; every other request is moto's own.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlparse

import boto3
from moto.s3.exceptions import S3ClientError
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

from conftest import free_port


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    environment: dict[str, str]

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def keys(self, prefix: str = "") -> list[str]:
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


_SIMPLE_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_MOTO_KEY_RESPONSE = S3Response.key_response
ranged_reads = {"served": 0}  # ranged GETs answered by reading the range only


def _key_response_reading_ranges(self, request, full_url, headers):
    """moto's ``S3Response.key_response``, except that a plain ranged GET of an object reads the range."""
    wanted = _SIMPLE_RANGE.fullmatch(request.headers.get("range", ""))
    if request.method != "GET" or wanted is None or urlparse(full_url).query:
        return _MOTO_KEY_RESPONSE(self, request, full_url, headers)
    self.setup_class(request)
    try:
        key = self.backend.get_object(self.parse_bucket_name_from_url(request, full_url), self.parse_key_name())
    except S3ClientError:
        key = None
    first = int(wanted.group(1))
    if key is None or first >= key.size:  # moto's answers: 404, 416
        return _MOTO_KEY_RESPONSE(self, request, full_url, headers)
    last = min(int(wanted.group(2) or key.size - 1), key.size - 1)
    with key.lock:
        key._value_buffer.seek(first)
        content = key._value_buffer.read(last - first + 1)
    ranged_reads["served"] += 1
    answer = {**key.response_dict, "content-range": f"bytes {first}-{last}/{key.size}",
              "content-length": str(len(content))}
    return 206, answer, content


def read_ranges_only(enabled: bool = True) -> None:
    """Serve plain ranged GETs by reading the range (the default), or as moto does (``False``)."""
    S3Response.key_response = _key_response_reading_ranges if enabled else _MOTO_KEY_RESPONSE


read_ranges_only()


@contextmanager
def s3_server(bucket: str = "faces"):
    """Start the server, create ``bucket``, and point this process's AWS environment at it."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    environment = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                   "AWS_ENDPOINT": endpoint, "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield S3Server(endpoint, bucket, environment)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
