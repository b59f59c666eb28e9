-- Users of the web UI and their roles, like CompreFace's: a global role (owner, administrator, user)
-- and a role per application (owner, administrator, user). Passwords are argon2id hashes; sessions
-- and their CSRF tokens are stored as SHA-256 digests of the cookie value. Failed logins per login
-- name are counted for throttling.

CREATE TABLE users (
    id             bigserial   PRIMARY KEY,
    email          text        NOT NULL,
    password_hash  text        NOT NULL,
    global_role    text        NOT NULL CHECK (global_role IN ('owner', 'administrator', 'user')),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (lower(email));
-- at most one owner
CREATE UNIQUE INDEX users_one_owner ON users (global_role) WHERE global_role = 'owner';

CREATE TABLE application_roles (
    application_id  bigint NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text   NOT NULL CHECK (role IN ('owner', 'administrator', 'user')),
    PRIMARY KEY (application_id, user_id)
);
CREATE INDEX application_roles_user ON application_roles (user_id);

CREATE TABLE user_sessions (
    token_hash  text        PRIMARY KEY,
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX user_sessions_user ON user_sessions (user_id);

CREATE TABLE login_failures (
    login         text        PRIMARY KEY,
    failures      integer     NOT NULL,
    locked_until  timestamptz NULL
);
