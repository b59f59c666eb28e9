"""Users, roles and sessions of the web UI over HTTP: what each role may do, CSRF, throttling, cookies."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from ui_helpers import OWNER_EMAIL, OWNER_PASSWORD, ensure_owner, session_client


@pytest.fixture(scope="module")
def owner(server):
    ensure_owner(server.url, server.admin_token)
    with session_client(server.url, OWNER_EMAIL, OWNER_PASSWORD) as client:
        yield client


@pytest.fixture(scope="module")
def shop(owner) -> dict:
    """An application with a recognition service, and a user per application role plus one without any."""
    app = owner.post("/api/v1/admin/applications", json={"name": "roles shop"}).json()
    service = owner.post(f"/api/v1/admin/applications/{app['id']}/services",
                         json={"name": "faces", "type": "recognition"}).json()
    for role in ("owner", "administrator", "user", "none"):
        response = owner.post("/api/v1/admin/users", json={"email": f"{role}@shop.example", "password": "shop-password",
                                                           "global_role": "user"})
        assert response.status_code == 201, response.text
        if role != "none":
            answer = owner.put(f"/api/v1/admin/applications/{app['id']}/members",
                               json={"email": f"{role}@shop.example", "role": role})
            assert answer.status_code == 200, answer.text
    return {"app": app, "service": service}


def as_user(server, role: str):
    return session_client(server.url, f"{role}@shop.example", "shop-password")


def test_the_session_cookie_is_http_only_same_site_and_secure(server, owner):
    response = httpx.post(f"{server.url}/api/v1/auth/login", json={"email": OWNER_EMAIL, "password": OWNER_PASSWORD})
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
    assert OWNER_PASSWORD not in response.text


def test_a_second_owner_cannot_be_set_up(server, owner):
    answer = httpx.post(f"{server.url}/api/v1/auth/setup", json={"admin_token": server.admin_token,
                                                                 "email": "late@example.org", "password": "late-password"})
    assert answer.status_code == 409 and "exists already" in answer.json()["message"]
    wrong = httpx.post(f"{server.url}/api/v1/auth/setup", json={"admin_token": "guess", "email": "x@example.org",
                                                                "password": "password-x"})
    assert wrong.status_code == 401


def test_changes_without_the_csrf_token_are_refused(server, owner):
    cookie = owner.headers["cookie"]
    bare = httpx.post(f"{server.url}/api/v1/admin/applications", json={"name": "csrf"}, headers={"cookie": cookie})
    assert bare.status_code == 403 and "CSRF" in bare.json()["message"]
    forged = httpx.post(f"{server.url}/api/v1/admin/applications", json={"name": "csrf"},
                        headers={"cookie": cookie, "x-csrf-token": "forged"})
    assert forged.status_code == 403
    assert httpx.get(f"{server.url}/api/v1/admin/applications", headers={"cookie": cookie}).status_code == 200


def test_each_application_role_may_do_what_it_should_and_no_more(server, shop, lfw_image):
    app_id, service_id = shop["app"]["id"], shop["service"]["id"]
    as_service = {"x-service-id": str(service_id)}
    with as_user(server, "none") as stranger:
        assert stranger.get("/api/v1/admin/applications").json() == []
        assert stranger.get(f"/api/v1/admin/applications/{app_id}/services").status_code == 404
        assert stranger.get("/api/v1/recognition/faces", headers=as_service).status_code == 404
        assert stranger.get("/api/v1/admin/users").status_code == 403
    with as_user(server, "user") as user:
        assert [a["id"] for a in user.get("/api/v1/admin/applications").json()] == [app_id]
        assert user.get("/api/v1/recognition/subjects/page", headers=as_service).status_code == 200
        refused = user.post("/api/v1/recognition/faces", params={"subject": "x"}, headers=as_service,
                            files={"file": lfw_image})
        assert refused.status_code == 403 and "needs administrator" in refused.json()["message"]
        assert user.post(f"/api/v1/admin/applications/{app_id}/services",
                         json={"name": "mine", "type": "detection"}).status_code == 403
        recognized = user.post("/api/v1/recognition/recognize", headers=as_service, files={"file": lfw_image})
        assert recognized.status_code == 200 and recognized.json()["result"][0]["unknown"] is True
    with as_user(server, "administrator") as administrator:
        added = administrator.post("/api/v1/recognition/faces", params={"subject": "abel"}, headers=as_service,
                                   files={"file": lfw_image})
        assert added.status_code == 200, added.text
        assert administrator.delete(f"/api/v1/admin/applications/{app_id}").status_code == 403
        assert administrator.put(f"/api/v1/admin/applications/{app_id}/members",
                                 json={"email": "none@shop.example", "role": "user"}).status_code == 403
    with as_user(server, "owner") as app_owner:
        renamed = app_owner.put(f"/api/v1/admin/applications/{app_id}", json={"name": "roles shop 2"})
        assert renamed.status_code == 200
        assert app_owner.get("/api/v1/admin/users").status_code == 403  # an application's owner is no global admin
    page = httpx.get(f"{server.url}/api/v1/recognition/subjects/page", headers={"x-api-key": shop["service"]["api_key"]})
    assert page.json()["subjects"] == [{"subject": "abel", "faces": 1}]


def test_a_global_user_owns_the_applications_they_create(server, shop):
    with as_user(server, "none") as user:
        created = user.post("/api/v1/admin/applications", json={"name": "my own"})
        assert created.status_code == 201
        assert user.get("/api/v1/auth/me").json()["applications"] == {str(created.json()["id"]): "owner"}
        assert user.delete(f"/api/v1/admin/applications/{created.json()['id']}").status_code == 200


def test_only_the_owner_makes_administrators(server, owner, shop):
    made = owner.post("/api/v1/admin/users", json={"email": "admin@example.org", "password": "admin-password",
                                                   "global_role": "administrator"})
    assert made.status_code == 201
    with session_client(server.url, "admin@example.org", "admin-password") as administrator:
        assert administrator.get(f"/api/v1/admin/applications/{shop['app']['id']}/services").status_code == 200
        refused = administrator.post("/api/v1/admin/users", json={"email": "admin2@example.org",
                                                                  "password": "admin-password",
                                                                  "global_role": "administrator"})
        assert refused.status_code == 403
        owner_id = owner.get("/api/v1/auth/me").json()["user"]["id"]
        assert administrator.delete(f"/api/v1/admin/users/{owner_id}").status_code == 403


def test_failed_logins_lock_the_name_for_a_while(server, owner):
    owner.post("/api/v1/admin/users", json={"email": "slow@example.org", "password": "right-password"})
    statuses = [httpx.post(f"{server.url}/api/v1/auth/login",
                           json={"email": "slow@example.org", "password": "wrong-password"}).status_code
                for _ in range(5)]
    assert statuses == [401] * 5
    locked = httpx.post(f"{server.url}/api/v1/auth/login", json={"email": "slow@example.org",
                                                                 "password": "right-password"})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 25
    assert "too many failed logins" in locked.json()["message"]


def test_logout_ends_the_session_on_every_replica(server):
    with session_client(server.url, OWNER_EMAIL, OWNER_PASSWORD) as client:
        assert client.post("/api/v1/auth/logout").status_code == 204
        for _ in range(4):  # two ingress replicas
            assert client.get("/api/v1/auth/me").status_code == 401


def test_the_ui_is_served_with_a_strict_content_security_policy(server):
    page = httpx.get(f"{server.url}/ui/")
    assert page.status_code == 200 and '<script type="module" src="app.js">' in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self' covers scripts
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{server.url}/ui/pages/collection.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{server.url}/ui", follow_redirects=False).status_code in (307, 308)


def users_cli(server, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACES_POSTGRES_DSN": server.settings.postgres_dsn, "FACES_USER_PASSWORD": "cli-password"}
    return subprocess.run([sys.executable, "-m", "faces_cli.main", "users", *argv], env=env, capture_output=True,
                          text=True, timeout=120)


def test_faces_users_add_creates_a_user_who_can_log_in(server, owner):
    added = users_cli(server, "add", "cli@example.org", "--role", "administrator")
    assert added.returncode == 0, added.stderr
    assert "cli@example.org (administrator) created" in added.stdout
    with session_client(server.url, "cli@example.org", "cli-password") as client:
        assert client.get("/api/v1/auth/me").json()["user"]["global_role"] == "administrator"
    again = users_cli(server, "add", "CLI@example.org")
    assert again.returncode == 2 and "exists already" in again.stderr
    second_owner = users_cli(server, "add", "owner2@example.org", "--role", "owner")
    assert second_owner.returncode == 2 and "owner exists already" in second_owner.stderr
    listed = users_cli(server, "list")
    assert "administrator\tcli@example.org" in listed.stdout and f"owner\t{OWNER_EMAIL}" in listed.stdout
