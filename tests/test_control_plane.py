"""Control plane and embedded PostgreSQL, against a real PostgreSQL server (pgserver), no mocks.

One embedded server per module; each test that writes gets its own fresh database on it, so tests
do not see each other's rows. Async code runs with ``asyncio.run`` inside plain test functions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import psutil
import pytest

from store.control import (
    SERVICE_TYPES,
    Application,
    ControlPlane,
    Service,
    apply_migrations,
    load_migrations,
)
from store.embedded_pg import EmbeddedPostgres, resolve_dsn
from store.errors import Conflict, NotFound, StoreError
from store.gallery_intents import Intent, IntentStore


@pytest.fixture(scope="module")
def pg(postgres_dir_factory) -> EmbeddedPostgres:
    server = EmbeddedPostgres(postgres_dir_factory("pgdata"))
    yield server
    server.stop()


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not: PID 1 here may never reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def _create_database(pg: EmbeddedPostgres) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(pg.dsn_for("postgres"))
    try:
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()
    return pg.dsn_for(name)


@pytest.fixture
def dsn(pg) -> str:
    """DSN of a fresh, empty database on the module's server."""
    return asyncio.run(_create_database(pg))


def with_plane(dsn: str, body: Callable[[ControlPlane], Awaitable[None]]) -> None:
    """Run ``body`` with a connected control plane, closing it afterwards."""

    async def main() -> None:
        plane = await ControlPlane.connect(dsn)
        try:
            await body(plane)
        finally:
            await plane.close()

    asyncio.run(main())


def _run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line, which is returned."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- embedded server ---------------------------------------------------------------------------


def test_embedded_dsn_reaches_the_faces_database_over_a_unix_socket(pg):
    assert pg.dsn.startswith("postgresql://postgres@/faces?host=/")
    assert pg.socket_dir is not None and (pg.socket_dir / f".s.PGSQL.{pg.port}").is_socket()

    async def main() -> tuple[str, str | None]:
        connection = await asyncpg.connect(pg.dsn)
        try:
            return (
                await connection.fetchval("SELECT current_database()"),
                await connection.fetchval("SELECT inet_server_addr()::text"),
            )
        finally:
            await connection.close()

    database, server_address = asyncio.run(main())
    assert database == "faces"
    assert server_address is None  # a unix-socket connection, no TCP


def test_resolve_dsn_prefers_the_configured_dsn_and_starts_nothing(postgres_tmp_path):
    configured = "postgresql://user:secret@db.example:5432/faces"
    assert resolve_dsn(configured, postgres_tmp_path) == (configured, None)
    assert not (postgres_tmp_path / "postgres").exists()


def test_resolve_dsn_without_configuration_attaches_to_the_running_server(pg):
    dsn, server = resolve_dsn(None, pg.pgdata.parent)
    assert server is not None
    try:
        assert dsn == pg.dsn
        assert server.pid == pg.pid  # re-attached, not a second server
    finally:
        server.stop()
    # Stopping the second handle in this process leaves the server running for the first one.
    assert _running(pg.pid)

    async def main() -> int:
        connection = await asyncpg.connect(pg.dsn)
        try:
            return await connection.fetchval("SELECT 1")
        finally:
            await connection.close()

    assert asyncio.run(main()) == 1


def test_restart_on_the_same_data_dir_keeps_the_data(postgres_tmp_path):
    first = EmbeddedPostgres(postgres_tmp_path)
    first_pid = first.pid
    with_plane(first.dsn, lambda plane: plane.create_application("survives restarts"))
    first.stop()
    assert not _running(first_pid)
    assert not (postgres_tmp_path / "postgres" / "postmaster.pid").exists()

    second = EmbeddedPostgres(postgres_tmp_path)
    try:
        assert second.pid != first_pid

        async def check(plane: ControlPlane) -> None:
            assert [app.name for app in await plane.list_applications()] == ["survives restarts"]

        with_plane(second.dsn, check)
    finally:
        second.stop()
    assert not _running(second.pid)


def test_second_process_attaches_to_the_running_server_and_leaves_it_running(pg):
    with_plane(pg.dsn, lambda plane: plane.create_application("seen by another process"))
    out = _run_python(
        f"""
        import asyncio, json
        import asyncpg
        from store.embedded_pg import EmbeddedPostgres

        server = EmbeddedPostgres({str(pg.pgdata.parent)!r})

        async def main():
            connection = await asyncpg.connect(server.dsn)
            try:
                return await connection.fetchval(
                    "SELECT name FROM applications WHERE name = 'seen by another process'")
            finally:
                await connection.close()

        name = asyncio.run(main())
        server.stop()
        print(json.dumps({{"pid": server.pid, "dsn": server.dsn, "name": name}}))
        """
    )
    assert out == {"pid": pg.pid, "dsn": pg.dsn, "name": "seen by another process"}
    assert _running(pg.pid)

    async def main() -> int:
        connection = await asyncpg.connect(pg.dsn)
        try:
            return await connection.fetchval("SELECT count(*) FROM applications")
        finally:
            await connection.close()

    assert asyncio.run(main()) >= 1


def test_server_stops_with_the_last_process_and_restarts_for_a_new_handle(postgres_tmp_path):
    first = EmbeddedPostgres(postgres_tmp_path)
    first_pid = first.pid
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from store.embedded_pg import EmbeddedPostgres

                server = EmbeddedPostgres({str(postgres_tmp_path)!r})
                print(server.pid, flush=True)
                sys.stdin.readline()
                server.stop()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert int(other.stdout.readline()) == first_pid
        first.stop()
        assert _running(first_pid)  # the other process still holds it
        other.stdin.write("stop\n")
        other.stdin.flush()
        assert other.wait(timeout=60) == 0
    finally:
        if other.poll() is None:
            other.kill()
    assert not _running(first_pid)  # stopped with the last attached process

    # pgserver still caches its stale handle in this process; a new one must start the server again.
    again = EmbeddedPostgres(postgres_tmp_path)
    try:
        assert again.pid != first_pid and _running(again.pid)
        with_plane(again.dsn, lambda plane: plane.create_application("after restart"))
    finally:
        again.stop()
    assert not _running(again.pid)


def test_a_crashed_process_does_not_keep_the_server_alive(postgres_tmp_path):
    server = EmbeddedPostgres(postgres_tmp_path)
    pid = server.pid
    out = _run_python(
        f"""
        import json, os
        from store.embedded_pg import EmbeddedPostgres

        server = EmbeddedPostgres({str(postgres_tmp_path)!r})
        print(json.dumps({{"pid": server.pid}}), flush=True)
        os._exit(0)  # dies without detaching
        """
    )
    assert out == {"pid": pid}
    attached = json.loads((postgres_tmp_path / "postgres" / ".handle_pids.json").read_text())
    assert len(attached) == 2  # the dead process is still recorded
    server.stop()
    assert not _running(pid)


# --- migrations --------------------------------------------------------------------------------


def test_migration_files_are_numbered_and_ordered():
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert migrations[0].version == 1 and migrations[0].name == "0001_control_plane.sql"
    assert "CREATE TABLE applications" in migrations[0].sql


def test_migrations_are_applied_once_when_connects_race(dsn):
    async def main() -> None:
        first, second = await asyncio.gather(ControlPlane.connect(dsn), ControlPlane.connect(dsn))
        try:
            app = await first.create_application("shared")
            assert await second.get_application(app.id) == app
            rows = await first.pool.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
            assert [(r["version"], r["name"]) for r in rows] == [
                (m.version, m.name) for m in load_migrations()
            ]
            # A later connect finds nothing left to apply.
            async with first.pool.acquire() as connection:
                assert await apply_migrations(connection) == []
        finally:
            await first.close()
            await second.close()

    asyncio.run(main())


def test_apply_migrations_reports_what_it_applied(dsn):
    async def main() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            assert await apply_migrations(connection) == [m.version for m in load_migrations()]
            assert await apply_migrations(connection) == []
            tables = {
                row["tablename"]
                for row in await connection.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            }
            assert tables >= {  # the control plane's own; later migrations add feature tables
                "schema_migrations",
                "applications",
                "services",
                "subjects",
                "request_stats",
                "admin_tokens",
            }
            # The advisory lock is released afterwards.
            assert await connection.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
        finally:
            await connection.close()

    asyncio.run(main())


# --- applications ------------------------------------------------------------------------------


def test_applications_create_list_get_rename(dsn):
    async def body(plane: ControlPlane) -> None:
        assert await plane.list_applications() == []
        alpha = await plane.create_application("alpha")
        beta = await plane.create_application("beta")
        assert isinstance(alpha, Application) and alpha.name == "alpha"
        assert alpha.created_at.tzinfo is not None
        assert await plane.list_applications() == [alpha, beta]
        assert await plane.get_application(beta.id) == beta

        renamed = await plane.rename_application(alpha.id, "gamma")
        assert (renamed.id, renamed.name, renamed.created_at) == (alpha.id, "gamma", alpha.created_at)
        assert await plane.get_application(alpha.id) == renamed

        with pytest.raises(Conflict, match="an application named 'beta' already exists"):
            await plane.create_application("beta")
        with pytest.raises(Conflict, match="'beta' already exists"):
            await plane.rename_application(alpha.id, "beta")
        with pytest.raises(NotFound, match="application 9999 not found"):
            await plane.get_application(9999)
        with pytest.raises(NotFound, match="application 9999 not found"):
            await plane.rename_application(9999, "delta")
        with pytest.raises(ValueError):
            await plane.create_application("  ")
        assert [app.name for app in await plane.list_applications()] == ["gamma", "beta"]

    with_plane(dsn, body)


def test_delete_application_cascades_and_returns_service_ids(dsn):
    async def body(plane: ControlPlane) -> None:
        doomed = await plane.create_application("doomed")
        kept = await plane.create_application("kept")
        first, first_key = await plane.create_service(doomed.id, "one", "recognition")
        second, _ = await plane.create_service(doomed.id, "two", "detection")
        survivor, survivor_key = await plane.create_service(kept.id, "one", "recognition")
        await plane.add_subject(first.id, "alice")
        await plane.record_requests({(first.id, "recognize"): (3, 0)})

        assert await plane.delete_application(doomed.id) == [first.id, second.id]

        with pytest.raises(NotFound):
            await plane.get_application(doomed.id)
        with pytest.raises(NotFound):
            await plane.get_service(first.id)
        assert await plane.service_by_key(first_key) is None
        assert await plane.pool.fetchval("SELECT count(*) FROM subjects") == 0
        assert await plane.pool.fetchval("SELECT count(*) FROM request_stats") == 0
        assert await plane.list_all_services() == [survivor]
        assert await plane.service_by_key(survivor_key) == survivor
        with pytest.raises(NotFound, match=f"application {doomed.id} not found"):
            await plane.delete_application(doomed.id)
        # An application without services deletes to an empty list.
        assert await plane.delete_application(kept.id) == [survivor.id]
        empty = await plane.create_application("empty")
        assert await plane.delete_application(empty.id) == []

    with_plane(dsn, body)


# --- services ----------------------------------------------------------------------------------


def test_services_create_list_get_rename_threshold_delete(dsn):
    async def body(plane: ControlPlane) -> None:
        app = await plane.create_application("app")
        other = await plane.create_application("other")
        with pytest.raises(NotFound, match=f"application {app.id + other.id + 100} not found"):
            await plane.list_services(app.id + other.id + 100)
        assert await plane.list_services(app.id) == []

        services = []
        for index, kind in enumerate(SERVICE_TYPES):
            service, key = await plane.create_service(app.id, f"s{index}", kind)
            assert isinstance(service, Service)
            assert (service.application_id, service.type, service.shards) == (app.id, kind, 1)
            assert service.similarity_threshold is None and service.shard_replicas is None
            services.append(service)
        sharded, _ = await plane.create_service(other.id, "s0", "recognition", 0.9, shards=4, shard_replicas=3)
        assert (sharded.similarity_threshold, sharded.shards, sharded.shard_replicas) == (0.9, 4, 3)

        assert await plane.list_services(app.id) == services
        assert await plane.list_services(other.id) == [sharded]
        assert await plane.list_all_services() == services + [sharded]
        assert await plane.get_service(sharded.id) == sharded

        with pytest.raises(Conflict, match="a service named 's0' already exists"):
            await plane.create_service(app.id, "s0", "recognition")
        with pytest.raises(NotFound, match="application 9999 not found"):
            await plane.create_service(9999, "x", "recognition")

        renamed = await plane.rename_service(services[0].id, "renamed")
        assert renamed.name == "renamed" and renamed.id == services[0].id
        with pytest.raises(Conflict):
            await plane.rename_service(services[0].id, "s1")
        with pytest.raises(NotFound, match="service 9999 not found"):
            await plane.rename_service(9999, "x")

        assert (await plane.set_similarity_threshold(renamed.id, 0.75)).similarity_threshold == 0.75
        assert (await plane.get_service(renamed.id)).similarity_threshold == 0.75
        assert (await plane.set_similarity_threshold(renamed.id, None)).similarity_threshold is None
        with pytest.raises(ValueError, match="between 0 and 1"):
            await plane.set_similarity_threshold(renamed.id, 1.5)
        with pytest.raises(NotFound):
            await plane.set_similarity_threshold(9999, 0.5)

        assert (await plane.set_shard_replicas(renamed.id, 2)).shard_replicas == 2
        assert (await plane.get_service(renamed.id)).shard_replicas == 2
        assert (await plane.set_shard_replicas(renamed.id, None)).shard_replicas is None
        for wrong in (0, 17, 1.5, True):
            with pytest.raises(ValueError, match="shard replicas must be an integer from 1 to 16"):
                await plane.set_shard_replicas(renamed.id, wrong)
        with pytest.raises(NotFound):
            await plane.set_shard_replicas(9999, 2)

        deleted = await plane.delete_service(services[1].id)
        assert deleted == services[1]
        with pytest.raises(NotFound, match=f"service {services[1].id} not found"):
            await plane.get_service(services[1].id)
        with pytest.raises(NotFound):
            await plane.delete_service(services[1].id)
        assert [s.id for s in await plane.list_services(app.id)] == [
            services[0].id,
            services[2].id,
            services[3].id,
        ]

    with_plane(dsn, body)


def test_invalid_service_arguments_raise_value_error(dsn):
    async def body(plane: ControlPlane) -> None:
        app = await plane.create_application("app")
        with pytest.raises(ValueError, match="unknown service type 'faces'"):
            await plane.create_service(app.id, "x", "faces")
        with pytest.raises(ValueError, match="shards"):
            await plane.create_service(app.id, "x", "recognition", shards=0)
        with pytest.raises(ValueError, match="between 0 and 1"):
            await plane.create_service(app.id, "x", "recognition", similarity_threshold=-0.1)
        with pytest.raises(ValueError, match="shard replicas"):
            await plane.create_service(app.id, "x", "recognition", shard_replicas=0)
        with pytest.raises(ValueError):
            await plane.create_service(app.id, "", "recognition")
        assert await plane.list_services(app.id) == []

    with_plane(dsn, body)


def test_api_keys_are_uuid4_and_stored_only_as_sha256(dsn):
    async def body(plane: ControlPlane) -> None:
        app = await plane.create_application("app")
        service, key = await plane.create_service(app.id, "svc", "recognition")
        assert uuid.UUID(key).version == 4 and str(uuid.UUID(key)) == key

        stored = await plane.pool.fetchval("SELECT api_key_hash FROM services WHERE id = $1", service.id)
        assert stored == _sha256(key)
        dump = await plane.pool.fetchval("SELECT string_agg(row_to_json(s)::text, '') FROM services s")
        assert key not in dump

        assert await plane.service_by_key(key) == service
        assert await plane.service_by_key(key.upper()) is None
        assert await plane.service_by_key("not-a-key") is None
        _, other_key = await plane.create_service(app.id, "svc2", "detection")
        assert other_key != key
        assert (await plane.service_by_key(other_key)).name == "svc2"

    with_plane(dsn, body)


def test_regenerated_key_replaces_the_old_one_at_once(dsn):
    async def body(plane: ControlPlane) -> None:
        app = await plane.create_application("app")
        service, old_key = await plane.create_service(app.id, "svc", "verification")
        new_key = await plane.regenerate_key(service.id)
        assert new_key != old_key and uuid.UUID(new_key).version == 4
        assert await plane.service_by_key(old_key) is None
        assert await plane.service_by_key(new_key) == service
        assert await plane.pool.fetchval(
            "SELECT api_key_hash FROM services WHERE id = $1", service.id
        ) == _sha256(new_key)
        with pytest.raises(NotFound, match="service 9999 not found"):
            await plane.regenerate_key(9999)

    with_plane(dsn, body)


# --- subjects ----------------------------------------------------------------------------------


def test_subjects_add_list_exists_delete(dsn):
    async def body(plane: ControlPlane) -> None:
        app = await plane.create_application("app")
        service, _ = await plane.create_service(app.id, "svc", "recognition")
        other, _ = await plane.create_service(app.id, "other", "recognition")
        assert await plane.list_subjects(service.id) == []

        assert await plane.add_subject(service.id, "bob") is True
        assert await plane.add_subject(service.id, "bob") is False
        assert await plane.add_subject(service.id, "Alice") is True
        assert await plane.add_subject(service.id, "alice") is True  # names are case-sensitive
        assert await plane.list_subjects(service.id) == ["Alice", "alice", "bob"]
        assert await plane.subject_exists(service.id, "bob") is True
        assert await plane.subject_exists(service.id, "carol") is False
        assert await plane.subject_exists(other.id, "bob") is False  # subjects are per service

        await plane.ensure_subjects(service.id, ["carol", "bob", "dave", "carol"])
        await plane.ensure_subjects(service.id, [])
        assert await plane.list_subjects(service.id) == ["Alice", "alice", "bob", "carol", "dave"]
        await plane.ensure_subjects(other.id, ["bob"])
        assert await plane.list_subjects(other.id) == ["bob"]

        intents = IntentStore(plane.pool)
        await intents.begin_delete(service.id, "dave")
        assert await plane.subject_exists(service.id, "dave") is True  # until the faces are gone
        assert await intents.pending(service.id) == [Intent("dave", "delete", None)]
        await intents.finish(service.id, "dave")
        assert await plane.subject_exists(service.id, "dave") is False
        assert await intents.pending(service.id) == []
        with pytest.raises(NotFound, match="subject 'dave' not found"):
            await intents.begin_delete(service.id, "dave")

        await intents.begin_delete_all(service.id)
        assert len(await intents.pending(service.id)) == 4
        assert await intents.finish_delete_all(service.id) == 4
        assert await intents.finish_delete_all(service.id) == 0
        assert await intents.pending(service.id) == []
        assert await plane.list_subjects(service.id) == []
        assert await plane.list_subjects(other.id) == ["bob"]

        with pytest.raises(NotFound, match="service 9999 not found"):
            await plane.add_subject(9999, "x")
        with pytest.raises(NotFound, match="service 9999 not found"):
            await plane.ensure_subjects(9999, ["x"])
        with pytest.raises(NotFound, match="service 9999 not found"):
            await plane.list_subjects(9999)
        with pytest.raises(ValueError):
            await plane.add_subject(service.id, "")

    with_plane(dsn, body)


def test_rename_subject_renames_or_merges(dsn):
    async def body(plane: ControlPlane) -> None:
        app = await plane.create_application("app")
        service, _ = await plane.create_service(app.id, "svc", "recognition")
        await plane.ensure_subjects(service.id, ["alice", "bob"])
        created = await plane.pool.fetchval(
            "SELECT created_at FROM subjects WHERE service_id = $1 AND name = 'alice'", service.id
        )

        intents = IntentStore(plane.pool)
        await intents.begin_rename(service.id, "alice", "alicia")
        assert await plane.list_subjects(service.id) == ["alice", "alicia", "bob"]  # both until the faces moved
        await intents.begin_rename(service.id, "alice", "alicia")  # a retry: the same intent
        with pytest.raises(Conflict, match="rename to 'alicia' of subject 'alice' did not finish"):
            await intents.begin_delete(service.id, "alice")
        await intents.finish(service.id, "alice")
        assert await plane.list_subjects(service.id) == ["alicia", "bob"]
        assert (
            await plane.pool.fetchval(
                "SELECT created_at FROM subjects WHERE service_id = $1 AND name = 'alicia'", service.id
            )
            == created
        )

        await intents.begin_rename(service.id, "alicia", "bob")  # merged
        await intents.finish(service.id, "alicia")
        assert await plane.list_subjects(service.id) == ["bob"]

        with pytest.raises(NotFound, match="subject 'alice' not found"):
            await intents.begin_rename(service.id, "alice", "anyone")
        assert await plane.list_subjects(service.id) == ["bob"]
        assert await intents.pending(service.id) == []

    with_plane(dsn, body)


# --- request statistics ------------------------------------------------------------------------


def test_request_stats_accumulate_per_day_and_endpoint(dsn):
    async def body(plane: ControlPlane) -> None:
        app = await plane.create_application("app")
        service, _ = await plane.create_service(app.id, "svc", "recognition")
        other, _ = await plane.create_service(app.id, "other", "detection")
        assert await plane.service_stats(service.id) == []

        yesterday = date(2026, 1, 1)
        await plane.record_requests({(service.id, "recognize"): (5, 1)}, day=yesterday)
        await plane.record_requests(
            {
                (service.id, "recognize"): (10, 2),
                (service.id, "add_face"): (3, 0),
                (other.id, "detect"): (7, 7),
                (9999, "recognize"): (1, 1),  # deleted service: ignored, no error
            }
        )
        await plane.record_requests({(service.id, "recognize"): (1, 1)})
        await plane.record_requests({})

        today = datetime.now(timezone.utc).date()
        assert today > yesterday
        assert await plane.service_stats(service.id) == [
            {"day": today.isoformat(), "endpoint": "add_face", "requests": 3, "errors": 0},
            {"day": today.isoformat(), "endpoint": "recognize", "requests": 11, "errors": 3},
            {"day": "2026-01-01", "endpoint": "recognize", "requests": 5, "errors": 1},
        ]
        assert await plane.service_stats(other.id) == [
            {"day": today.isoformat(), "endpoint": "detect", "requests": 7, "errors": 7}
        ]
        assert await plane.pool.fetchval("SELECT count(*) FROM request_stats WHERE service_id = 9999") == 0

        await plane.delete_service(other.id)
        await plane.record_requests({(other.id, "detect"): (1, 0), (service.id, "add_face"): (1, 0)})
        assert (await plane.service_stats(service.id))[0]["requests"] == 4
        with pytest.raises(NotFound):
            await plane.service_stats(other.id)

    with_plane(dsn, body)


def test_record_requests_uses_the_utc_day(dsn):
    async def body(plane: ControlPlane) -> None:
        app = await plane.create_application("app")
        service, _ = await plane.create_service(app.id, "svc", "recognition")
        before = datetime.now(timezone.utc).date()
        await plane.record_requests({(service.id, "verify"): (2, 0)})
        after = datetime.now(timezone.utc).date()
        [row] = await plane.service_stats(service.id)
        assert row["day"] in {before.isoformat(), after.isoformat()}
        assert before - timedelta(days=1) < date.fromisoformat(row["day"])

    with_plane(dsn, body)


# --- admin token -------------------------------------------------------------------------------


def test_admin_token_is_generated_once_on_first_start(dsn):
    async def body(plane: ControlPlane) -> None:
        assert await plane.check_admin_token("anything") is False  # no token yet
        token = await plane.ensure_admin_token(None)
        assert isinstance(token, str) and len(token) >= 40
        assert await plane.check_admin_token(token) is True
        assert await plane.check_admin_token(token + "x") is False
        assert await plane.pool.fetchval("SELECT token_hash FROM admin_tokens") == _sha256(token)
        # Later starts keep the stored token and reveal nothing.
        assert await plane.ensure_admin_token(None) is None
        assert await plane.check_admin_token(token) is True

    with_plane(dsn, body)


def test_configured_admin_token_replaces_the_stored_one(dsn):
    async def body(plane: ControlPlane) -> None:
        generated = await plane.ensure_admin_token(None)
        assert await plane.ensure_admin_token("configured-secret") is None
        assert await plane.check_admin_token("configured-secret") is True
        assert await plane.check_admin_token(generated) is False
        assert await plane.pool.fetchval("SELECT count(*) FROM admin_tokens") == 1
        assert await plane.pool.fetchval("SELECT token_hash FROM admin_tokens") == _sha256(
            "configured-secret"
        )
        # Dropping the configuration later keeps the last configured token; nothing is generated.
        assert await plane.ensure_admin_token(None) is None
        assert await plane.check_admin_token("configured-secret") is True
        with pytest.raises(ValueError):
            await plane.ensure_admin_token("")

    with_plane(dsn, body)


def test_configured_admin_token_on_an_empty_database(dsn):
    async def body(plane: ControlPlane) -> None:
        assert await plane.ensure_admin_token("from-settings") is None
        assert await plane.check_admin_token("from-settings") is True

    with_plane(dsn, body)


def test_concurrent_first_starts_generate_one_admin_token(dsn):
    async def main() -> None:
        planes = await asyncio.gather(*(ControlPlane.connect(dsn) for _ in range(3)))
        try:
            tokens = await asyncio.gather(*(plane.ensure_admin_token(None) for plane in planes))
            winners = [token for token in tokens if token is not None]
            assert len(winners) == 1
            assert await planes[0].check_admin_token(winners[0]) is True
        finally:
            for plane in planes:
                await plane.close()

    asyncio.run(main())


def test_errors_share_one_base_class():
    assert issubclass(NotFound, StoreError) and issubclass(Conflict, StoreError)
    assert not issubclass(StoreError, ValueError)
