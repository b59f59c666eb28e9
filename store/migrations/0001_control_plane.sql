-- Control plane: applications, their services (with hashed API keys), subjects,
-- request statistics and the admin token.
-- Plain CREATE TABLE (no IF NOT EXISTS): applying a migration twice must fail loudly.

CREATE TABLE applications (
    id          bigserial   PRIMARY KEY,
    name        text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE services (
    id                   bigserial        PRIMARY KEY,
    application_id       bigint           NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    name                 text             NOT NULL,
    type                 text             NOT NULL
                         CHECK (type IN ('recognition', 'detection', 'verification', 'video')),
    api_key_hash         text             NOT NULL UNIQUE,
    similarity_threshold double precision NULL
                         CHECK (similarity_threshold BETWEEN 0 AND 1),
    shards               integer          NOT NULL DEFAULT 1 CHECK (shards >= 1),
    created_at           timestamptz      NOT NULL DEFAULT now(),
    UNIQUE (application_id, name)
);

CREATE TABLE subjects (
    service_id  bigint      NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, name)
);

CREATE TABLE request_stats (
    service_id  bigint NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    day         date   NOT NULL,
    endpoint    text   NOT NULL,
    requests    bigint NOT NULL DEFAULT 0,
    errors      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (service_id, day, endpoint)
);

CREATE TABLE admin_tokens (
    id          smallint    PRIMARY KEY CHECK (id = 1),
    token_hash  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
