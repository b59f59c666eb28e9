"""Users of the web UI, their roles, sessions and login throttling (``users``, ``application_roles``,
``user_sessions``, ``login_failures``).

Roles are CompreFace's: a global role (``owner``: one user, everything, including administrators;
``administrator``: every application and the users; ``user``: only the applications where a role was
given) and a role per application (``owner``, ``administrator``, ``user``). Passwords are argon2id
hashes (argon2-cffi), checked in a worker thread. A session is a random cookie value stored as its
SHA-256 digest, with a CSRF token and an expiry. After :data:`FREE_FAILURES` failed logins in a row,
a login name is locked for a time that doubles with each further failure (at most
:data:`MAX_LOCK_S`); unknown names are counted too, so a locked answer does not tell whether a user exists.

Errors: :class:`~store.errors.NotFound`, :class:`~store.errors.Conflict` (a taken e-mail, a second
owner), :class:`~store.errors.InvalidValue` (a bad role, e-mail or password),
:class:`LoginThrottled` (a locked login name).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from store.control import hash_secret
from store.errors import Conflict, InvalidValue, NotFound, StoreError

ROLES = ("owner", "administrator", "user")
RANK = {"user": 1, "administrator": 2, "owner": 3}
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
FREE_FAILURES = 5
FIRST_LOCK_S = 30
MAX_LOCK_S = 900
SESSION_HOURS = 12

_hasher = PasswordHasher()
# Unknown logins are verified against this hash, so that they take as long as known ones.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class LoginThrottled(StoreError):
    """Too many failed logins for this name: try again after ``retry_after_s``."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"too many failed logins; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class User:
    id: int
    email: str
    global_role: str
    created_at: datetime


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    expires_at: datetime


def _user(row: asyncpg.Record) -> User:
    return User(id=row["id"], email=row["email"], global_role=row["global_role"], created_at=row["created_at"])


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidValue(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


def _check_email(email: str) -> str:
    email = email.strip()
    if not 3 <= len(email) <= 254 or "@" not in email or "\x00" in email or any(c.isspace() for c in email):
        raise InvalidValue("the e-mail must look like name@example.org")
    return email


def _check_password(password: str) -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidValue(f"the password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    if "\x00" in password:
        raise InvalidValue("the password must not contain NUL characters")
    return password


def _lock_seconds(failures: int) -> int:
    return min(MAX_LOCK_S, FIRST_LOCK_S * 2 ** (failures - FREE_FAILURES)) if failures >= FREE_FAILURES else 0


class UserStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    # --- users ----------------------------------------------------------------------------------

    async def count(self) -> int:
        return await self.pool.fetchval("SELECT count(*) FROM users")

    async def has_owner(self) -> bool:
        return await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE global_role = 'owner')")

    async def create(self, email: str, password: str, global_role: str) -> User:
        """A new user; :class:`Conflict` for a taken e-mail or a second owner (there is one at most)."""
        email, role = _check_email(email), check_role(global_role)
        password_hash = await asyncio.to_thread(_hasher.hash, _check_password(password))
        try:
            row = await self.pool.fetchrow(
                "INSERT INTO users (email, password_hash, global_role) VALUES ($1, $2, $3) "
                "RETURNING id, email, global_role, created_at", email, password_hash, role)
        except asyncpg.UniqueViolationError as exc:
            what = "an owner exists already" if "one_owner" in str(exc) else f"a user {email!r} exists already"
            raise Conflict(what) from None
        return _user(row)

    async def get(self, user_id: int) -> User:
        row = await self.pool.fetchrow("SELECT id, email, global_role, created_at FROM users WHERE id = $1", user_id)
        if row is None:
            raise NotFound(f"user {user_id} not found")
        return _user(row)

    async def by_email(self, email: str) -> User:
        row = await self.pool.fetchrow("SELECT id, email, global_role, created_at FROM users WHERE lower(email) = $1",
                                       email.strip().lower())
        if row is None:
            raise NotFound(f"no user with the e-mail {email.strip()!r}")
        return _user(row)

    async def page(self, offset: int, limit: int) -> tuple[list[User], int]:
        rows = await self.pool.fetch("SELECT id, email, global_role, created_at, count(*) OVER () AS total "
                                     "FROM users ORDER BY id OFFSET $1 LIMIT $2", offset, limit)
        total = rows[0]["total"] if rows else await self.count()
        return [_user(row) for row in rows], total

    async def update(self, user_id: int, *, global_role: str | None = None, password: str | None = None) -> User:
        if global_role is not None:
            try:
                await self.pool.execute("UPDATE users SET global_role = $2 WHERE id = $1", user_id,
                                        check_role(global_role))
            except asyncpg.UniqueViolationError:
                raise Conflict("there is an owner already") from None
        if password is not None:
            password_hash = await asyncio.to_thread(_hasher.hash, _check_password(password))
            await self.pool.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)
            await self.pool.execute("DELETE FROM user_sessions WHERE user_id = $1", user_id)
        return await self.get(user_id)

    async def delete(self, user_id: int) -> User:
        row = await self.pool.fetchrow("DELETE FROM users WHERE id = $1 RETURNING id, email, global_role, created_at",
                                       user_id)
        if row is None:
            raise NotFound(f"user {user_id} not found")
        return _user(row)

    # --- roles per application ------------------------------------------------------------------

    async def application_roles(self, user_id: int) -> dict[int, str]:
        rows = await self.pool.fetch("SELECT application_id, role FROM application_roles WHERE user_id = $1", user_id)
        return {row["application_id"]: row["role"] for row in rows}

    async def members(self, application_id: int) -> list[tuple[User, str]]:
        rows = await self.pool.fetch(
            "SELECT u.id, u.email, u.global_role, u.created_at, r.role FROM application_roles r "
            "JOIN users u ON u.id = r.user_id WHERE r.application_id = $1 ORDER BY u.email", application_id)
        return [(_user(row), row["role"]) for row in rows]

    async def set_application_role(self, application_id: int, user_id: int, role: str) -> None:
        try:
            await self.pool.execute(
                "INSERT INTO application_roles (application_id, user_id, role) VALUES ($1, $2, $3) "
                "ON CONFLICT (application_id, user_id) DO UPDATE SET role = EXCLUDED.role",
                application_id, user_id, check_role(role))
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(f"application {application_id} or user {user_id} not found") from None

    async def remove_application_role(self, application_id: int, user_id: int) -> None:
        done = await self.pool.execute("DELETE FROM application_roles WHERE application_id = $1 AND user_id = $2",
                                       application_id, user_id)
        if done == "DELETE 0":
            raise NotFound(f"user {user_id} has no role in application {application_id}")

    # --- login and sessions ---------------------------------------------------------------------

    async def login(self, email: str, password: str) -> tuple[str, Session] | None:
        """A new session ``(cookie value, session)`` for the right password, None for a wrong one;
        :class:`LoginThrottled` while the name is locked (the password is then not even checked)."""
        login = email.strip().lower()
        locked_until = await self.pool.fetchval("SELECT locked_until FROM login_failures WHERE login = $1", login)
        now = datetime.now(timezone.utc)
        if locked_until is not None and locked_until > now:
            raise LoginThrottled(max(1, int((locked_until - now).total_seconds() + 0.999)))
        row = await self.pool.fetchrow("SELECT id, password_hash FROM users WHERE lower(email) = $1", login)
        if not await asyncio.to_thread(_verify, row["password_hash"] if row else _DUMMY_HASH, password) or row is None:
            await self._failed(login)
            return None
        await self.pool.execute("DELETE FROM login_failures WHERE login = $1", login)
        return await self.open_session(row["id"])

    async def _failed(self, login: str) -> None:
        failures = await self.pool.fetchval(
            "INSERT INTO login_failures AS f (login, failures) VALUES ($1, 1) "
            "ON CONFLICT (login) DO UPDATE SET failures = f.failures + 1 RETURNING failures", login)
        lock = _lock_seconds(failures)
        if lock:
            await self.pool.execute("UPDATE login_failures SET locked_until = now() + make_interval(secs => $2) "
                                    "WHERE login = $1", login, float(lock))

    async def open_session(self, user_id: int) -> tuple[str, Session]:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = datetime.now(timezone.utc) + timedelta(hours=SESSION_HOURS)
        await self.pool.execute("DELETE FROM user_sessions WHERE expires_at < now()")
        await self.pool.execute("INSERT INTO user_sessions (token_hash, user_id, csrf_token, expires_at) "
                                "VALUES ($1, $2, $3, $4)", hash_secret(token), user_id, csrf, expires)
        return token, Session(await self.get(user_id), csrf, expires)

    async def session(self, token: str) -> Session | None:
        row = await self.pool.fetchrow(
            "SELECT u.id, u.email, u.global_role, u.created_at, s.csrf_token, s.expires_at FROM user_sessions s "
            "JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1 AND s.expires_at > now()", hash_secret(token))
        return Session(_user(row), row["csrf_token"], row["expires_at"]) if row else None

    async def close_session(self, token: str) -> None:
        await self.pool.execute("DELETE FROM user_sessions WHERE token_hash = $1", hash_secret(token))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
