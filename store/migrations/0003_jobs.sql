-- Bulk jobs (enrollment, migration): one row per job with its input, progress and outcome.
-- Plain CREATE TABLE (no IF NOT EXISTS): applying a migration twice must fail loudly.

CREATE TABLE jobs (
    id           bigserial   PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('enroll', 'migrate')),
    service_id   bigint      NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    input        text        NOT NULL,
    policy       text        NULL CHECK (policy IN ('largest', 'reject', 'all')),
    options      jsonb       NOT NULL DEFAULT '{}',
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    total        bigint      NULL,
    processed    bigint      NOT NULL DEFAULT 0,
    counts       jsonb       NOT NULL DEFAULT '{}',
    report_path  text        NULL,
    error        text        NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz NULL,
    finished_at  timestamptz NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX jobs_by_service ON jobs (service_id, id DESC);
