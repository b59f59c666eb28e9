"""The platform's global HAProxy settings: HAProxy's ACL match cache off, so that request paths the
ingress has not seen before (ids) do not grow HAProxy's memory. The real HAProxy binary, through
the ``faces-haproxy`` command and without it, and the platform's own HAProxy."""

from __future__ import annotations

import http.client
import sysconfig
import uuid
from pathlib import Path

from conftest import free_port
from haproxy_process import haproxy_running, once_listening
from process_tree import descendants_named
from serve_app.haproxy_global import FILE_NAME, GLOBAL_SETTINGS, with_config_file
from serve_app.ingress_error_page import haproxy_binary

FACES_HAPROXY = str(Path(sysconfig.get_path("scripts")) / "faces-haproxy")


def serve_like_config(folder: Path, port: int) -> Path:
    """Serve's frontend rules for its own endpoints (case-insensitive ``path -i`` ACLs), HAProxy
    answering every request itself."""
    config = folder / "haproxy.cfg"
    config.write_text(f"""global
    maxconn 64
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend http_frontend
    bind 127.0.0.1:{port}
    acl healthcheck path -i /-/healthz
    http-request return status 200 content-type text/plain string "success" if healthcheck
    acl routes path -i /-/routes
    http-request return status 200 content-type application/json string "{{}}" if routes
    http-request return status 404 content-type text/plain string "not found"
""")
    return config


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def get_unique_paths(port: int, count: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(count):
            connection.request("DELETE", f"/api/v1/recognition/faces/{uuid.uuid4()}")
            response = connection.getresponse()
            response.read()
            assert response.status == 404
    finally:
        connection.close()


def rss_growth_over_unique_paths(command: str, folder: Path) -> int:
    """KB HAProxy's RSS grew by over 3,000 requests to new paths, after 1,000 of them (2 of
    Serve's ACLs: 8,000 entries of the 10,000 a thread caches)."""
    port = free_port()
    with haproxy_running(command, serve_like_config(folder, port)) as process:
        once_listening(process, lambda: get_unique_paths(port, 1000), OSError)  # pools and buffers warmed up
        before = rss_kb(process.pid)
        get_unique_paths(port, 3000)
        return rss_kb(process.pid) - before


def test_plain_haproxy_grows_with_each_new_path_and_faces_haproxy_does_not(tmp_path):
    # two cache entries of ~110 bytes per new path (one per ACL), up to 10,000 entries per thread
    plain = tmp_path / "plain"
    plain.mkdir()
    assert rss_growth_over_unique_paths(haproxy_binary(), plain) > 400
    faces = tmp_path / "faces"
    faces.mkdir()
    assert rss_growth_over_unique_paths(FACES_HAPROXY, faces) < 100
    assert (faces / FILE_NAME).read_text() == GLOBAL_SETTINGS


def test_the_settings_file_follows_serves_config_on_the_command_line():
    config = Path("/tmp/haproxy-serve/x/haproxy.cfg")
    extra = config.with_name(FILE_NAME)
    reload = ["-db", "-f", str(config), "-dR", "-sf", "123", "-x", "/tmp/haproxy-serve/x/admin.sock"]
    assert with_config_file(reload, config, extra) == [
        "-db", "-f", str(config), "-f", str(extra), "-dR", "-sf", "123", "-x", "/tmp/haproxy-serve/x/admin.sock"]


def test_the_platforms_haproxy_runs_with_the_global_settings(server):
    haproxy = descendants_named("haproxy")
    assert haproxy
    for pid in haproxy:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        configs = [Path(value) for flag, value in zip(arguments, arguments[1:]) if flag == "-f"]
        assert [path.name for path in configs] == ["haproxy.cfg", FILE_NAME], arguments
        assert configs[1].read_text() == GLOBAL_SETTINGS
