"""PostgreSQL control plane: applications, services and their API keys, subjects, statistics.

:class:`ControlPlane` wraps an asyncpg pool. :meth:`ControlPlane.connect` applies the numbered
``store/migrations/NNNN_name.sql`` files in order, each once, recorded in ``schema_migrations``,
under a PostgreSQL advisory lock so that processes connecting at the same time do not race.

API keys are ``uuid4`` strings, like CompreFace's. Only their SHA-256 hex digest is stored; the
plaintext is returned once, by :meth:`ControlPlane.create_service` and
:meth:`ControlPlane.regenerate_key`. The admin token is stored the same way.

Errors: :class:`~store.errors.NotFound` for a missing application, service or subject,
:class:`~store.errors.Conflict` for a duplicate name, :class:`~store.errors.InvalidValue` (a
:class:`ValueError`) for invalid arguments.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import asyncpg

from store.errors import Conflict, InvalidValue, NotFound, StoreError

_logger = logging.getLogger(__name__)

SERVICE_TYPES = ("recognition", "detection", "verification", "video")

# Key of the session-level advisory lock held while migrations are applied ("rayface" in ASCII).
MIGRATION_LOCK_KEY = 0x72617966616365
_MIGRATION_FILE = re.compile(r"^(\d+)_([A-Za-z0-9_]+)\.sql$")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
CONNECT_TIMEOUT_S = 5.0
STATEMENT_TIMEOUT_S = 30.0

_SERVICE_COLUMNS = "id, application_id, name, type, similarity_threshold, shards, shard_replicas, created_at, model"
DEFAULT_SERVICE_MODEL = "sface"
MAX_SHARD_REPLICAS = 16


@dataclass(frozen=True)
class Application:
    """An application: a named group of services (CompreFace's "application")."""

    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Service:
    """A service of an application, addressed by its API key (CompreFace's "service"/"model").

    ``similarity_threshold`` is the service's own threshold in [0, 1], or None for the default.
    ``shards`` is the number of face-table shards its faces are spread over; ``shard_replicas`` the
    actors per shard (the primary and its read replicas), or None for the platform's default.
    ``model`` names the embedding model its faces are embedded with (a key of
    ``facecore.embed.EMBEDDING_MODELS``).
    """

    id: int
    application_id: int
    name: str
    type: str
    similarity_threshold: float | None
    shards: int
    shard_replicas: int | None
    created_at: datetime
    model: str = DEFAULT_SERVICE_MODEL


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file of ``store/migrations``."""

    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The migration files shipped in ``store/migrations``, in version order.

    Raises :class:`StoreError` for a ``.sql`` file whose name is not ``NNNN_name.sql`` or for two
    files with the same version number.
    """
    folder = MIGRATIONS_DIR
    migrations: dict[int, Migration] = {}
    for entry in sorted(folder.iterdir()):
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            raise StoreError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise StoreError(
                f"migrations {migrations[version].name!r} and {entry.name!r} share version {version}"
            )
        migrations[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    return [migrations[version] for version in sorted(migrations)]


async def apply_migrations(connection: asyncpg.Connection) -> list[int]:
    """Apply the migrations not yet recorded in ``schema_migrations``; return their versions.

    Holds an advisory lock for the whole run, so concurrent callers apply each migration once; each
    migration runs in its own transaction together with its ``schema_migrations`` row.
    """
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer     PRIMARY KEY,
                name        text        NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        applied = {row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations")}
        migrations = load_migrations()
        unknown = applied - {migration.version for migration in migrations}
        if unknown:
            _logger.warning("database has migrations this code does not know: %s", sorted(unknown))
        done: list[int] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            _logger.info("applied migration %s", migration.name)
            done.append(migration.version)
        return done
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest of an API key or admin token, the only form in which they are stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _new_api_key() -> str:
    return str(uuid.uuid4())


def _require_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue(f"the {kind} name must be a non-empty string")
    if "\x00" in name or not _encodable(name):
        raise InvalidValue(f"the {kind} name must be valid Unicode text without NUL characters")
    return name


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_threshold(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise InvalidValue(f"the similarity threshold must be between 0 and 1, not {value}")
    return value


def _check_shard_replicas(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARD_REPLICAS:
        raise InvalidValue(f"shard replicas must be an integer from 1 to {MAX_SHARD_REPLICAS}, not {value!r}")
    return value


def _application(row: asyncpg.Record) -> Application:
    return Application(id=row["id"], name=row["name"], created_at=row["created_at"])


def _service(row: asyncpg.Record) -> Service:
    return Service(
        id=row["id"],
        application_id=row["application_id"],
        name=row["name"],
        type=row["type"],
        similarity_threshold=row["similarity_threshold"],
        shards=row["shards"],
        shard_replicas=row["shard_replicas"],
        created_at=row["created_at"],
        model=row["model"],
    )


class ControlPlane:
    """The control-plane store over an asyncpg pool. Build it with :meth:`connect`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, dsn: str, min_size: int = 1, max_size: int = 5, application: str = "faces") -> ControlPlane:
        """Open a pool on ``dsn`` and apply pending migrations; ``application`` names its connections
        in PostgreSQL (``pg_stat_activity.application_name``), so an operator sees who holds them.

        Connecting and each statement are bounded (:data:`CONNECT_TIMEOUT_S`,
        :data:`STATEMENT_TIMEOUT_S`), so that a PostgreSQL that stops answering fails a request
        instead of hanging it; connections lost with a restart are replaced on their next use.
        """
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=CONNECT_TIMEOUT_S,
                                         command_timeout=STATEMENT_TIMEOUT_S,
                                         server_settings={"application_name": application})
        try:
            async with pool.acquire() as connection:
                await apply_migrations(connection)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    @property
    def pool(self) -> asyncpg.Pool:
        """The underlying pool, for modules that add their own tables."""
        return self._pool

    async def close(self) -> None:
        """Close the pool (waits for connections in use to be released)."""
        await self._pool.close()

    async def ping(self) -> None:
        """One round trip to the server (readiness check)."""
        await self._pool.fetchval("SELECT 1")

    # --- applications -------------------------------------------------------------------------

    async def create_application(self, name: str) -> Application:
        """Create an application; :class:`Conflict` if one with this name exists."""
        _require_name("application", name)
        try:
            row = await self._pool.fetchrow(
                "INSERT INTO applications (name) VALUES ($1) RETURNING id, name, created_at", name
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"an application named {name!r} already exists") from None
        return _application(row)

    async def list_applications(self) -> list[Application]:
        """All applications, oldest first."""
        rows = await self._pool.fetch("SELECT id, name, created_at FROM applications ORDER BY id")
        return [_application(row) for row in rows]

    async def get_application(self, app_id: int) -> Application:
        """The application ``app_id``; :class:`NotFound` if missing."""
        row = await self._pool.fetchrow(
            "SELECT id, name, created_at FROM applications WHERE id = $1", app_id
        )
        if row is None:
            raise NotFound(f"application {app_id} not found")
        return _application(row)

    async def rename_application(self, app_id: int, name: str) -> Application:
        """Rename an application; :class:`NotFound` if missing, :class:`Conflict` if the name is taken."""
        _require_name("application", name)
        try:
            row = await self._pool.fetchrow(
                "UPDATE applications SET name = $2 WHERE id = $1 RETURNING id, name, created_at",
                app_id,
                name,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"an application named {name!r} already exists") from None
        if row is None:
            raise NotFound(f"application {app_id} not found")
        return _application(row)

    async def delete_application(self, app_id: int) -> list[int]:
        """Delete an application with its services; return the deleted services' ids (ascending).

        The caller drops those services' face tables. :class:`NotFound` if missing.
        """
        async with self._pool.acquire() as connection, connection.transaction():
            # Locking the row blocks concurrent service inserts (their foreign key check needs a
            # share lock on it), so the list below is exactly what the cascade deletes.
            found = await connection.fetchval(
                "SELECT id FROM applications WHERE id = $1 FOR UPDATE", app_id
            )
            if found is None:
                raise NotFound(f"application {app_id} not found")
            rows = await connection.fetch(
                "SELECT id FROM services WHERE application_id = $1 ORDER BY id", app_id
            )
            await connection.execute("DELETE FROM applications WHERE id = $1", app_id)
        return [row["id"] for row in rows]

    # --- services -----------------------------------------------------------------------------

    async def create_service(
        self,
        application_id: int,
        name: str,
        type: str,
        similarity_threshold: float | None = None,
        shards: int = 1,
        shard_replicas: int | None = None,
        model: str = DEFAULT_SERVICE_MODEL,
    ) -> tuple[Service, str]:
        """Create a service; return it with its plaintext API key (shown once, stored hashed).

        :class:`InvalidValue` for a type not in :data:`SERVICE_TYPES`, ``shards < 1``, shard replicas
        outside [1, :data:`MAX_SHARD_REPLICAS`] or a threshold outside [0, 1]; :class:`NotFound` for a
        missing application; :class:`Conflict` for a name already used in the application. ``model``
        is stored as given: callers check it against the embedding models they know.
        """
        _require_name("service", name)
        if type not in SERVICE_TYPES:
            raise InvalidValue(f"unknown service type {type!r}: expected one of {', '.join(SERVICE_TYPES)}")
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise InvalidValue(f"shards must be an integer >= 1, not {shards!r}")
        threshold = _check_threshold(similarity_threshold)
        replicas = _check_shard_replicas(shard_replicas)
        api_key = _new_api_key()
        try:
            row = await self._pool.fetchrow(
                f"""
                INSERT INTO services (application_id, name, type, api_key_hash, similarity_threshold, shards,
                                      shard_replicas, model)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                RETURNING {_SERVICE_COLUMNS}
                """,
                application_id,
                name,
                type,
                hash_secret(api_key),
                threshold,
                shards,
                replicas,
                model,
            )
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(f"application {application_id} not found") from None
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"a service named {name!r} already exists in application {application_id}"
            ) from None
        return _service(row), api_key

    async def list_services(self, application_id: int) -> list[Service]:
        """The services of an application, oldest first; :class:`NotFound` if it is missing."""
        rows = await self._pool.fetch(
            f"SELECT {_SERVICE_COLUMNS} FROM services WHERE application_id = $1 ORDER BY id",
            application_id,
        )
        if not rows:
            await self.get_application(application_id)
        return [_service(row) for row in rows]

    async def list_all_services(self) -> list[Service]:
        """Every service of every application, oldest first."""
        rows = await self._pool.fetch(f"SELECT {_SERVICE_COLUMNS} FROM services ORDER BY id")
        return [_service(row) for row in rows]

    async def get_service(self, service_id: int) -> Service:
        """The service ``service_id``; :class:`NotFound` if missing."""
        row = await self._pool.fetchrow(
            f"SELECT {_SERVICE_COLUMNS} FROM services WHERE id = $1", service_id
        )
        if row is None:
            raise NotFound(f"service {service_id} not found")
        return _service(row)

    async def rename_service(self, service_id: int, name: str) -> Service:
        """Rename a service; :class:`NotFound` if missing, :class:`Conflict` if the name is taken.

        Service names are unique within their application.
        """
        _require_name("service", name)
        try:
            row = await self._pool.fetchrow(
                f"UPDATE services SET name = $2 WHERE id = $1 RETURNING {_SERVICE_COLUMNS}",
                service_id,
                name,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a service named {name!r} already exists in its application") from None
        if row is None:
            raise NotFound(f"service {service_id} not found")
        return _service(row)

    async def set_similarity_threshold(self, service_id: int, value: float | None) -> Service:
        """Set (or with None, clear) a service's similarity threshold in [0, 1]."""
        return await self._set_service_column(service_id, "similarity_threshold", _check_threshold(value))

    async def set_shard_replicas(self, service_id: int, value: int | None) -> Service:
        """Set (or with None, return to the platform's default) the actors per index shard of a
        service: its primary and ``value - 1`` read replicas, from the next start of its shards."""
        return await self._set_service_column(service_id, "shard_replicas", _check_shard_replicas(value))

    async def _set_service_column(self, service_id: int, column: str, value) -> Service:
        """Set one column of a service (a checked value); :class:`NotFound` if the service is missing."""
        row = await self._pool.fetchrow(
            f"UPDATE services SET {column} = $2 WHERE id = $1 RETURNING {_SERVICE_COLUMNS}", service_id, value)
        if row is None:
            raise NotFound(f"service {service_id} not found")
        return _service(row)

    async def delete_service(self, service_id: int) -> Service:
        """Delete a service with its subjects and statistics; return it. :class:`NotFound` if missing."""
        row = await self._pool.fetchrow(
            f"DELETE FROM services WHERE id = $1 RETURNING {_SERVICE_COLUMNS}", service_id
        )
        if row is None:
            raise NotFound(f"service {service_id} not found")
        return _service(row)

    async def set_shards(self, service_id: int, shards: int) -> Service:
        """Switch the service to a layout of ``shards`` index shards (the re-shard job's last step)."""
        if shards < 1:
            raise InvalidValue("a service needs at least one shard")
        return await self._set_service_column(service_id, "shards", shards)

    async def set_model(self, service_id: int, model: str) -> Service:
        """Switch the service to the index shards of embedding model ``model`` (a migration's switch)."""
        return await self._set_service_column(service_id, "model", model)

    async def regenerate_key(self, service_id: int) -> str:
        """Give a service a new API key and return it; the old key stops working at once."""
        api_key = _new_api_key()
        found = await self._pool.fetchval(
            "UPDATE services SET api_key_hash = $2 WHERE id = $1 RETURNING id",
            service_id,
            hash_secret(api_key),
        )
        if found is None:
            raise NotFound(f"service {service_id} not found")
        return api_key

    async def service_by_key(self, api_key: str) -> Service | None:
        """The service whose API key is ``api_key``, or None (one indexed lookup, no cache)."""
        row = await self._pool.fetchrow(
            f"SELECT {_SERVICE_COLUMNS} FROM services WHERE api_key_hash = $1", hash_secret(api_key)
        )
        return None if row is None else _service(row)

    # --- subjects -----------------------------------------------------------------------------

    async def add_subject(self, service_id: int, name: str) -> bool:
        """Add a subject to a service; False if it already existed. :class:`NotFound` for no service."""
        _require_name("subject", name)
        try:
            status = await self._pool.execute(
                "INSERT INTO subjects (service_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                service_id,
                name,
            )
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(f"service {service_id} not found") from None
        return status == "INSERT 0 1"

    async def ensure_subjects(self, service_id: int, names: list[str]) -> None:
        """Add every subject of ``names`` that the service lacks (one round trip)."""
        unique = sorted({_require_name("subject", name) for name in names})
        if not unique:
            return
        try:
            await self._pool.execute(
                """
                INSERT INTO subjects (service_id, name)
                SELECT $1, name FROM unnest($2::text[]) AS name
                ON CONFLICT DO NOTHING
                """,
                service_id,
                unique,
            )
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(f"service {service_id} not found") from None

    async def list_subjects(self, service_id: int) -> list[str]:
        """The service's subject names, sorted; :class:`NotFound` if the service is missing."""
        rows = await self._pool.fetch(
            "SELECT name FROM subjects WHERE service_id = $1 ORDER BY name", service_id
        )
        if not rows:
            await self.get_service(service_id)
        return [row["name"] for row in rows]

    async def subjects_page(self, service_id: int, offset: int, limit: int,
                            search: str = "") -> tuple[list[str], int]:
        """A page of the service's subject names in name order, those containing ``search`` (any case)
        when given, and how many match."""
        rows = await self._pool.fetch(
            "SELECT name, count(*) OVER () AS total FROM subjects WHERE service_id = $1 "
            "AND ($2 = '' OR strpos(lower(name), lower($2)) > 0) ORDER BY name OFFSET $3 LIMIT $4",
            service_id, search, offset, limit)
        if not rows:
            total = await self._pool.fetchval(
                "SELECT count(*) FROM subjects WHERE service_id = $1 AND ($2 = '' OR strpos(lower(name), lower($2)) > 0)",
                service_id, search)
            return [], total
        return [row["name"] for row in rows], rows[0]["total"]

    async def subject_exists(self, service_id: int, name: str) -> bool:
        """Whether the service has a subject of this name."""
        return bool(
            await self._pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM subjects WHERE service_id = $1 AND name = $2)",
                service_id,
                name,
            )
        )

    # --- request statistics -------------------------------------------------------------------

    async def record_requests(
        self, counts: dict[tuple[int, str], tuple[int, int]], *, day: date | None = None
    ) -> None:
        """Add ``{(service_id, endpoint): (requests, errors)}`` to the day's rows (one round trip).

        ``day`` defaults to today in UTC. Counts of services that no longer exist are dropped.
        """
        if not counts:
            return
        day = day or datetime.now(timezone.utc).date()
        service_ids, endpoints, requests, errors = [], [], [], []
        for (service_id, endpoint), (request_count, error_count) in counts.items():
            service_ids.append(service_id)
            endpoints.append(endpoint)
            requests.append(request_count)
            errors.append(error_count)
        query = """
            INSERT INTO request_stats AS stats (service_id, day, endpoint, requests, errors)
            SELECT c.service_id, $5::date, c.endpoint, c.requests, c.errors
            FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[])
                 AS c (service_id, endpoint, requests, errors)
            JOIN services ON services.id = c.service_id
            ON CONFLICT (service_id, day, endpoint) DO UPDATE
            SET requests = stats.requests + EXCLUDED.requests,
                errors = stats.errors + EXCLUDED.errors
        """
        args = (service_ids, endpoints, requests, errors, day)
        try:
            await self._pool.execute(query, *args)
        except asyncpg.ForeignKeyViolationError:
            # A service was deleted between the join and the insert; the retry no longer sees it.
            await self._pool.execute(query, *args)

    async def service_stats(self, service_id: int) -> list[dict]:
        """The service's daily counts, newest day first, then by endpoint.

        Rows: ``{"day": "YYYY-MM-DD", "endpoint": str, "requests": int, "errors": int}``.
        :class:`NotFound` if the service is missing.
        """
        rows = await self._pool.fetch(
            """
            SELECT day, endpoint, requests, errors FROM request_stats
            WHERE service_id = $1 ORDER BY day DESC, endpoint
            """,
            service_id,
        )
        if not rows:
            await self.get_service(service_id)
        return [
            {
                "day": row["day"].isoformat(),
                "endpoint": row["endpoint"],
                "requests": row["requests"],
                "errors": row["errors"],
            }
            for row in rows
        ]

    # --- admin token --------------------------------------------------------------------------

    async def ensure_admin_token(self, configured: str | None) -> str | None:
        """Make sure an admin token exists; return a newly generated one, else None.

        A configured token replaces any stored one. Without one, the first start generates a token
        and returns it (the caller shows it once); later starts keep the stored one and return None.
        """
        if configured is not None:
            if not configured.strip():
                raise InvalidValue("the configured admin token must not be empty")
            await self._pool.execute(
                """
                INSERT INTO admin_tokens (id, token_hash) VALUES (1, $1)
                ON CONFLICT (id) DO UPDATE SET token_hash = EXCLUDED.token_hash, created_at = now()
                """,
                hash_secret(configured),
            )
            return None
        token = secrets.token_urlsafe(32)
        inserted = await self._pool.fetchval(
            "INSERT INTO admin_tokens (id, token_hash) VALUES (1, $1) ON CONFLICT DO NOTHING RETURNING id",
            hash_secret(token),
        )
        if inserted is None:
            return None
        _logger.info("generated a new admin token")
        return token

    async def check_admin_token(self, token: str) -> bool:
        """Whether ``token`` is the admin token (constant-time comparison of hashes)."""
        stored = await self._pool.fetchval("SELECT token_hash FROM admin_tokens WHERE id = 1")
        if stored is None:
            return False
        return hmac.compare_digest(hash_secret(token), stored)
