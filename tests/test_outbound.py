"""The outbound policy: what video sources, webhooks and bulk jobs may make the platform open.

The first tests check the policy itself (real name resolution, real files and symlinks, a real
HTTP receiver); the others go through the running platform: tenants' streams, admin streams whose
file turns into a link into the data dir after it was accepted, webhooks to internal addresses,
bulk jobs aimed at the data dir, and credentials in every answer and record. The test platform
lists loopback in FACES_ALLOWED_NETWORKS and the system temporary folder and the test photos in
FACES_FILE_ROOTS (conftest).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from facevideo.config import SOURCE_SCHEMES
from facevideo.source import SourceError, VideoSource
from facevideo.synthetic import Appearance
from facevideo.webhooks import sign, verify_signature
from outbound import OutboundPolicy, OutboundRefused, redact
from outbound.http import CheckedTransport
from serve_app.client import FaceApiError, FaceClient
from test_rtsp_redirects import RtspServer
from test_video_streams import wait_for_state
from video_samples import MjpegServer, still


# --- the policy -------------------------------------------------------------------------------

@pytest.fixture
def folders(tmp_path):
    roots, data = tmp_path / "videos", tmp_path / "data"
    roots.mkdir()
    data.mkdir()
    (data / "pg").mkdir()
    (data / "pg" / "PG_VERSION").write_text("16\n")
    (roots / "door.mp4").write_bytes(b"x")
    (roots / "into-data").symlink_to(data / "pg", target_is_directory=True)
    return roots, data


def test_local_files_only_for_the_admin_only_inside_the_roots_never_in_the_data_dir(folders):
    roots, data = folders
    policy = OutboundPolicy.build([roots], [], [data])
    assert policy.check(str(roots / "door.mp4"), SOURCE_SCHEMES, admin=True) == str(roots / "door.mp4")
    assert policy.check(f"file://{roots}/later.mp4", SOURCE_SCHEMES, admin=True) == str(roots / "later.mp4")
    refused = {
        str(roots / "door.mp4"): (False, "only for the admin"),
        str(roots / ".." / "data" / "pg" / "PG_VERSION"): (True, "data dir"),
        str(roots / "into-data" / "PG_VERSION"): (True, "data dir"),  # a link out of the root
        "/etc/passwd": (True, "outside the file roots"),
    }
    for path, (admin, reason) in refused.items():
        with pytest.raises(OutboundRefused) as error:
            policy.check(path, SOURCE_SCHEMES, admin=admin)
        assert reason in str(error.value), path
        assert error.value.public == "local files are not allowed here; give a network URL"
    with pytest.raises(OutboundRefused, match="no file roots are configured"):
        OutboundPolicy.build([], [], [data]).check(str(roots / "door.mp4"), SOURCE_SCHEMES, admin=True)
    with pytest.raises(OutboundRefused, match="local files are not allowed here"):
        policy.check(str(roots / "door.mp4"), {"http", "https"}, admin=True)


@pytest.mark.parametrize("url, kind", [
    ("http://127.0.0.1:8000/x", "loopback"), ("http://localhost/x", "loopback"),
    ("http://2130706433/", "loopback"), ("http://[::ffff:127.0.0.1]/", "loopback"), ("rtsp://[::1]/cam", "loopback"),
    ("http://10.1.2.3/hook", "private"), ("rtsp://192.168.0.9/1", "private"), ("http://172.16.0.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"), ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://169.254.10.10/", "link-local"), ("udp://239.1.1.1:5000", "multicast"), ("http://0.0.0.0/", "unspecified"),
    ("http://100.64.0.1/", "not publicly routable"), ("http://[64:ff9b::a00:1]/", "private"),
])
def test_internal_addresses_are_refused(url, kind):
    with pytest.raises(OutboundRefused) as error:
        OutboundPolicy.build().check(url, SOURCE_SCHEMES, admin=True)
    assert f"{kind} address" in str(error.value)
    assert error.value.public == "the URL's host is not allowed: it must resolve to public addresses"


def test_allowed_networks_open_exactly_what_they_list():
    policy = OutboundPolicy.build(allowed_networks=["127.0.0.0/8", "10.20.0.0/16", "169.254.0.0/16"])
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "rtsp://10.20.3.4/cam", "http://169.254.1.1/"):
        assert policy.check(url, SOURCE_SCHEMES, admin=False) == url
    for url in ("rtsp://10.21.3.4/cam", "http://169.254.169.254/"):  # metadata: only when listed by itself
        with pytest.raises(OutboundRefused):
            policy.check(url, SOURCE_SCHEMES, admin=False)
    listed = OutboundPolicy.build(allowed_networks=["169.254.169.254/32"])
    assert listed.check("http://169.254.169.254/", SOURCE_SCHEMES, admin=False)
    with pytest.raises(OutboundRefused, match="not allowed here"):
        policy.check("ftp://10.20.3.4/x", SOURCE_SCHEMES, admin=True)
    with pytest.raises(OutboundRefused, match="the URL has no host"):
        policy.check("http:///x", SOURCE_SCHEMES, admin=True)
    unknown = pytest.raises(OutboundRefused, match="cannot resolve")
    with unknown as error:
        policy.check("http://no-such-host.invalid/x", SOURCE_SCHEMES, admin=True)
    assert error.value.retry
    with pytest.raises(ValueError, match="not an address or a CIDR"):
        OutboundPolicy.build(allowed_networks=["10.0.0/8"])


def test_object_store_endpoints_are_checked_not_bucket_names():
    policy = OutboundPolicy.build()
    assert policy.check("s3://photos/manifest.csv", {"s3"}, admin=True) == "s3://photos/manifest.csv"
    with pytest.raises(OutboundRefused, match="loopback"):
        policy.check("s3://photos/m.csv?endpoint_override=127.0.0.1:9000&scheme=http", {"s3"}, admin=True)
    with pytest.raises(OutboundRefused, match="private"):
        policy.check("s3://photos/m.csv?endpoint_override=http://10.0.0.8:9000", {"s3"}, admin=True)


def test_credentials_are_masked():
    assert redact("rtsp://admin:p@ss@10.0.0.1:554/live?token=abc&fps=5") == \
        "rtsp://***@10.0.0.1:554/live?token=***&fps=5"
    text = ("cannot open s3://AKIA:SECRET@bucket/k?secret_key=s&endpoint_override=m:9000 and "
            "https://h/hook?key=1&sig=2&password=3&api_key=4&X-Amz-Signature=5&page=6")
    assert redact(text) == ("cannot open s3://***@bucket/k?secret_key=***&endpoint_override=m:9000 and "
                            "https://h/hook?key=***&sig=***&password=***&api_key=***&X-Amz-Signature=***&page=6")
    assert redact(None) is None and redact("/videos/door.mp4") == "/videos/door.mp4"


def test_webhook_signatures_carry_a_timestamp_checked_within_a_window():
    body, now = b'{"id": 1}', time.time()
    stamp = str(int(now))
    assert verify_signature("s3cret", stamp, body, sign("s3cret", stamp, body))
    old = str(int(now) - 301)
    assert not verify_signature("s3cret", old, body, sign("s3cret", old, body)), "a replayed old delivery"
    future = str(int(now) + 301)
    assert not verify_signature("s3cret", future, body, sign("s3cret", future, body))
    assert verify_signature("s3cret", old, body, sign("s3cret", old, body), tolerance_s=600)
    assert not verify_signature("s3cret", "not-a-time", body, sign("s3cret", "not-a-time", body))


class Receiver:
    """A local HTTP endpoint that counts the POSTs it gets."""

    def __init__(self):
        self.posts: list[tuple[dict, bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                owner.posts.append((dict(self.headers), self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]


def test_the_webhook_transport_checks_each_connection_when_it_is_made():
    receiver = Receiver()

    async def post(policy: OutboundPolicy) -> int:
        async with httpx.AsyncClient(transport=CheckedTransport(policy)) as client:
            return (await client.post(f"http://localhost:{receiver.port}/hook", content=b"{}")).status_code

    try:
        assert asyncio.run(post(OutboundPolicy.build(allowed_networks=["127.0.0.0/8", "::1/128"]))) == 204
        with pytest.raises(OutboundRefused, match="localhost resolves to"):
            asyncio.run(post(OutboundPolicy.build()))
        assert len(receiver.posts) == 1
    finally:
        receiver.server.shutdown()


class Site:
    """An HTTP server on ``host`` answering ``pages`` (path -> status, headers, body) and recording
    every request it gets."""

    def __init__(self, host: str, pages: dict[str, tuple[int, dict, bytes]] | None = None):
        self.pages = pages or {}
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append(self.path)
                status, headers, body = owner.pages.get(self.path, (404, {}, b""))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://{host}:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sites():
    """A source host the policy allows (127.0.0.1) and a host it refuses (127.0.0.2: loopback that
    FACES_ALLOWED_NETWORKS does not list)."""
    allowed, refused = Site("127.0.0.1"), Site("127.0.0.2")
    yield allowed, refused
    allowed.close()
    refused.close()


ONLY_127_0_0_1 = OutboundPolicy.build(allowed_networks=["127.0.0.1/32"])


@pytest.mark.parametrize("admin", [False, True])
def test_a_video_source_cannot_redirect_ffmpeg_to_a_refused_host(sites, admin):
    allowed, refused = sites
    refused.pages["/secret"] = (200, {"Content-Type": "multipart/x-mixed-replace; boundary=frame"}, b"")
    allowed.pages["/cam.mjpg"] = (302, {"Location": "/hop"}, b"")  # a relative hop on the same host
    allowed.pages["/hop"] = (307, {"Location": f"{refused.base}/secret"}, b"")
    with pytest.raises(SourceError) as error:
        VideoSource(f"{allowed.base}/cam.mjpg", policy=ONLY_127_0_0_1, admin=admin)
    assert error.value.permanent
    assert "127.0.0.2 is a loopback address that FACES_ALLOWED_NETWORKS does not list" in str(error.value)
    assert allowed.requests == ["/cam.mjpg", "/hop"]
    assert refused.requests == [], "FFmpeg followed the redirect to a host the policy refuses"
    with pytest.raises(SourceError, match="local files are not allowed"):
        allowed.pages["/cam.mjpg"] = (301, {"Location": "file:///etc/passwd"}, b"")
        VideoSource(f"{allowed.base}/cam.mjpg", policy=ONLY_127_0_0_1, admin=admin)


def test_redirects_between_allowed_hosts_still_play(sites, data_dir):
    allowed, _ = sites
    camera = MjpegServer(Appearance(still(data_dir, "Abel_Pacheco", 1), 0, 1e9, (0.5, 0.5), 120)).start()
    allowed.pages["/door"] = (302, {"Location": camera.url}, b"")
    try:
        source = VideoSource(f"{allowed.base}/door", policy=ONLY_127_0_0_1, admin=False)
        try:
            frame = next(iter(source.frames()))
        finally:
            source.close()
        assert frame.image.shape == (270, 480, 3)
    finally:
        camera.stop()


@pytest.mark.parametrize("admin", [False, True])
def test_ffmpeg_connects_to_the_address_the_policy_checked_and_sends_the_name_as_host(monkeypatch, data_dir, admin):
    """A name only the policy's resolution knows (it stands for DNS that answers the check and FFmpeg
    differently): FFmpeg reaches the camera only at the checked address, and asks it for the name."""
    camera = MjpegServer(Appearance(still(data_dir, "Abel_Pacheco", 1), 0, 1e9, (0.5, 0.5), 120)).start()
    resolve = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs: resolve(
        "127.0.0.1" if host == "camera.rebind.test" else host, *args, **kwargs))
    try:
        source = VideoSource(camera.url.replace("127.0.0.1", "camera.rebind.test"), policy=ONLY_127_0_0_1,
                             admin=admin)
        try:
            frame = next(iter(source.frames()))
        finally:
            source.close()
        assert frame.image.shape == (270, 480, 3)
        # the redirect check's request and FFmpeg's, both to 127.0.0.1, both naming the host as given
        assert camera.hosts == [f"camera.rebind.test:{camera.port}"] * 2
    finally:
        camera.stop()


def test_a_tenant_playlist_cannot_send_ffmpeg_to_other_hosts(sites):
    allowed, refused = sites
    refused.pages["/seg0.ts"] = (200, {"Content-Type": "video/mp2t"}, b"\x47" * 188 * 10)
    playlist = (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
                f"#EXTINF:2.0,\n{refused.base}/seg0.ts\n#EXT-X-ENDLIST\n").encode()
    allowed.pages["/live.m3u8"] = (200, {"Content-Type": "application/vnd.apple.mpegurl"}, playlist)
    with pytest.raises(SourceError) as error:
        VideoSource(f"{allowed.base}/live.m3u8", policy=ONLY_127_0_0_1, admin=False)
    assert error.value.permanent
    assert refused.requests == [], "a playlist sent FFmpeg to a host the policy refuses"


# --- through the platform -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tenant(server, admin):
    application = admin.create_application("outbound-tenant")
    video = admin.create_service(application["id"], "cameras", "video")
    with FaceClient(server.url, api_key=video["api_key"]) as client:
        yield client


def post_stream(server, headers: dict, **body) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/video/streams", json=body, headers=headers, timeout=30)


def test_a_video_key_cannot_open_local_files_and_learns_nothing_about_them(server, tenant, data_dir, tmp_path):
    photo = tmp_path / "still.jpg"
    photo.write_bytes((data_dir / "lfw-dev" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg").read_bytes())
    unreadable = tmp_path / "locked.mp4"
    unreadable.write_bytes(b"\0" * 1000)
    unreadable.chmod(0)
    key = {"x-api-key": tenant.api_key}
    answers = [post_stream(server, key, source_url=source) for source in
               (str(photo), f"file://{photo}", str(tmp_path / "missing.mp4"), str(unreadable), "/etc/passwd")]
    assert [answer.status_code for answer in answers] == [400] * 5
    assert {answer.json()["message"] for answer in answers} == \
        {"source_url: local files are not allowed here; give a network URL"}
    assert tenant.list_streams() == []


def test_a_tenant_sees_generic_reasons_and_masked_credentials(server, admin, tenant):
    closed = free_port()  # nothing listens: connection refused
    source = f"http://cam:hunter2@127.0.0.1:{closed}/video.mjpg?token=abc123&fps=5"
    stream = tenant.add_stream(source, max_fps=2)
    assert stream["source_url"] == f"http://***@127.0.0.1:{closed}/video.mjpg?token=***&fps=5"
    try:
        own = wait_for_state(tenant, stream["id"], {"reconnecting"}, timeout=30)
        assert own["status"]["reason"] == "the source cannot be reached or read at the moment; retrying"
        detail = admin.get_stream(stream["id"])["status"]["reason"]
        assert "Connection refused" in detail and "***" in detail
        assert "hunter2" not in detail and "abc123" not in detail
        assert all("hunter2" not in json.dumps(s) for s in tenant.list_streams() + admin.list_streams())
    finally:
        tenant.delete_stream(stream["id"])


@pytest.mark.parametrize("protocol", ["http", "rtsp"])
def test_a_tenant_stream_redirected_to_a_metadata_address_fails_with_the_generic_reason(server, admin, tenant,
                                                                                        protocol):
    if protocol == "http":
        redirector = Site("127.0.0.1",
                          {"/cam.mjpg": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")})
        source, asked, made = f"{redirector.base}/cam.mjpg", ["/cam.mjpg"], lambda: redirector.requests
    else:  # FFmpeg follows RTSP redirects by itself: the platform's relay must stop this one
        redirector = RtspServer("127.0.0.1", "RTSP/1.0 302 Found\r\nLocation: rtsp://169.254.169.254/latest")
        source, asked = f"{redirector.url}/cam", ["OPTIONS", "DESCRIBE"]
        made = lambda: [method for method, _ in redirector.requests]  # noqa: E731
    stream = tenant.add_stream(source, max_fps=2)
    try:
        own = wait_for_state(tenant, stream["id"], {"failed", "running"}, timeout=30)
        assert own["status"] == {**own["status"], "state": "failed", "reason": "the source cannot be played"}
        detail = admin.get_stream(stream["id"])["status"]["reason"]
        assert "169.254.169.254 is a cloud metadata address" in detail
        assert made() == asked
    finally:
        tenant.delete_stream(stream["id"])
        redirector.close()


@pytest.mark.parametrize("hook", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.7:8080/hook",
                                  "http://[::ffff:10.1.1.1]/hook", "http://192.168.1.1/"])
def test_webhooks_to_internal_addresses_are_refused(server, admin, tenant, hook):
    port = free_port()
    for headers, detail in (({"x-api-key": tenant.api_key}, False), ({"x-admin-token": server.admin_token}, True)):
        answer = post_stream(server, headers, source_url=f"http://127.0.0.1:{port}/v.mjpg", webhook_url=hook)
        assert answer.status_code == 400, answer.text
        message = answer.json()["message"]
        assert message.startswith("webhook_url: ")
        assert ("FACES_ALLOWED_NETWORKS" in message) == detail
    stream = tenant.add_stream(f"http://127.0.0.1:{port}/v.mjpg", enabled=False)
    try:
        with pytest.raises(FaceApiError) as error:
            tenant.update_stream(stream["id"], webhook_url=hook)
        assert error.value.status == 400
    finally:
        tenant.delete_stream(stream["id"])


def test_a_null_webhook_secret_is_refused_while_a_webhook_is_set(server, admin):
    source = f"http://127.0.0.1:{free_port()}/v.mjpg"
    receiver = f"http://127.0.0.1:{free_port()}/hook"
    answer = post_stream(server, {"x-admin-token": server.admin_token}, source_url=source, webhook_url=receiver,
                         webhook_secret=None, enabled=False)
    assert answer.status_code == 400 and "webhook_secret" in answer.json()["message"]
    stream = admin.add_stream(source, webhook_url=receiver, enabled=False)
    try:
        assert len(stream["webhook_secret"]) >= 16
        with pytest.raises(FaceApiError) as error:
            admin.update_stream(stream["id"], webhook_secret=None)
        assert error.value.status == 400 and "webhook_secret" in error.value.message
        cleared = admin.update_stream(stream["id"], webhook_url=None, webhook_secret=None)
        assert cleared["webhook_url"] is None
    finally:
        admin.delete_stream(stream["id"])


def test_an_admin_file_is_checked_again_when_the_worker_opens_it(server, admin, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 1000)
    outside = admin.add_stream(str(clip), enabled=False)
    clip.unlink()
    # after it was accepted, the file becomes a link into the data dir (without the check at opening,
    # the stream would fail as "not a readable video")
    clip.symlink_to(server.settings.data_dir / "postgres" / "postgresql.conf")
    try:
        admin.update_stream(outside["id"], enabled=True)
        failed = wait_for_state(admin, outside["id"], {"failed", "finished", "running"}, timeout=45)
        assert failed["status"]["state"] == "failed", failed["status"]
        assert "data dir" in failed["status"]["reason"]
        assert admin.list_events(stream=outside["id"]) == []
        answer = post_stream(server, {"x-admin-token": server.admin_token}, source_url=str(clip))
        assert answer.status_code == 400 and "inside the platform's data dir" in answer.json()["message"]
        outside_roots = post_stream(server, {"x-admin-token": server.admin_token}, source_url="/etc/hostname")
        assert outside_roots.status_code == 400 and "outside the file roots" in outside_roots.json()["message"]
    finally:
        admin.delete_stream(outside["id"])


@pytest.fixture(scope="module")
def job_service(admin):
    application = admin.create_application("outbound-jobs")
    yield admin.create_service(application["id"], "bulk", "recognition")
    admin.delete_application(application["id"])  # with its jobs: none is left pointing at a stopped S3 server


def test_bulk_jobs_cannot_read_or_write_the_data_dir_or_outside_the_roots(server, admin, job_service, data_dir,
                                                                          tmp_path):
    platform_data = server.settings.data_dir
    tree = tmp_path / "tree"
    (tree / "Someone").mkdir(parents=True)
    cases = [
        (dict(path=str(platform_data)), "data dir"),
        (dict(path=str(platform_data.parent / "elsewhere" / ".." / platform_data.name / "lancedb")), "data dir"),
        (dict(path="/etc"), "outside the file roots"),
        (dict(path=str(tree), report=str(platform_data / "postgres" / "postgresql.conf")), "data dir"),
        (dict(path=str(tree), report="/etc/report.jsonl"), "outside the file roots"),
        (dict(path=str(tree), report="ftp://host/report.jsonl"), "not allowed here"),
        (dict(manifest="s3://photos/m.csv?endpoint_override=169.254.169.254:80"), "cloud metadata"),
    ]
    for body, reason in cases:
        with pytest.raises(FaceApiError) as error:
            admin.start_enroll_job(job_service["id"], **body)
        assert error.value.status == 400 and reason in error.value.message, (body, error.value)


def test_manifest_rows_are_confined_too(server, admin, job_service, data_dir, tmp_path):
    from bulk_helpers import wait_for_job

    good = data_dir / "lfw-dev" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    secret = server.settings.data_dir / "outbound-secret.jpg"
    secret.write_bytes(good.read_bytes())
    (tmp_path / "escape.jpg").symlink_to(secret)
    manifest = tmp_path / "people.csv"
    manifest.write_text(f"path,subject\n{good},Abel\n{secret},Thief\nescape.jpg,Thief\n/etc/hostname,Thief\n")
    report = tmp_path / "report.jsonl"
    job = wait_for_job(admin, admin.start_enroll_job(job_service["id"], manifest=str(manifest),
                                                     report=str(report))["id"])
    assert job["status"] == "succeeded", job["error"]
    rows = {Path(row["source"]).name: row for row in map(json.loads, report.read_text().splitlines())}
    assert rows["Abel_Pacheco_0001.jpg"]["status"] == "enrolled"
    for name, reason in (("outbound-secret.jpg", "data dir"), ("escape.jpg", "data dir"),
                         ("hostname", "outside the file roots")):
        assert rows[name]["status"] == "invalid" and reason in rows[name]["reason"], rows[name]
    api = FaceClient(server.url, api_key=job_service["api_key"])
    assert api.list_subjects()["subjects"] == ["Abel"]


def test_job_records_and_answers_hold_no_credentials(server, admin, job_service, s3_endpoint):
    from bulk_helpers import wait_for_job

    import pyarrow.fs as pafs

    bucket = pafs.S3FileSystem(access_key="testing", secret_key="testing", endpoint_override=s3_endpoint,
                               scheme="http", region="us-east-1", allow_bucket_creation=True)
    bucket.create_dir("photos")
    with bucket.open_output_stream("photos/one.csv") as out:
        out.write(b"path,subject\nmissing.jpg,Nobody\n")
    options = f"endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"
    with pytest.raises(FaceApiError) as error:  # an option pyarrow does not know
        admin.start_enroll_job(job_service["id"], manifest=f"s3://testing:topsecret@photos/one.csv?token=tok123")
    assert error.value.status == 400 and "topsecret" not in error.value.message and "tok123" not in error.value.message
    manifest = f"s3://testing:topsecret@photos/one.csv?{options}"
    started = admin.start_enroll_job(job_service["id"], manifest=manifest,
                                     report=f"s3://testing:topsecret@photos/r.jsonl?{options}")
    job = wait_for_job(admin, started["id"], timeout_s=120)
    text = json.dumps([started, job, admin.list_jobs(service_id=job_service["id"])])
    assert "topsecret" not in text
    assert job["status"] == "succeeded" and job["counts"]["invalid"] == 1, job
    assert job["input"] == f"s3://***@photos/one.csv?{options}"

    async def stored() -> str:
        import asyncpg

        connection = await asyncpg.connect(server.settings.postgres_dsn)
        try:
            return json.dumps([dict(row) for row in await connection.fetch(
                "SELECT input, options, error, report_path FROM jobs WHERE id = $1", started["id"])], default=str)
        finally:
            await connection.close()

    record = asyncio.run(stored())
    assert "topsecret" not in record and "***" in record
