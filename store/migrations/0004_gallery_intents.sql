-- Gallery changes that span PostgreSQL and the index shards (deleting or renaming a subject), written
-- before the shards change and removed with the subject row's own change: a row here is an operation
-- that did not finish, which `faces gallery check --repair` (or the client's retry) completes.

CREATE TABLE gallery_intents (
    service_id  bigint      NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    subject     text        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('delete', 'rename')),
    new_name    text        NULL CHECK ((action = 'rename') = (new_name IS NOT NULL)),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, subject)
);
