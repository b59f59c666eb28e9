-- Quotas and rate limits per service, set through the admin API. A NULL column means the platform's
-- default (FACES_QUOTA_*); a service without a row has every default.
-- Event media bytes are recorded per event, so a video service's stored media can be summed; events
-- stored beyond that quota have no crop.

CREATE TABLE service_quotas (
    service_id          bigint           PRIMARY KEY REFERENCES services (id) ON DELETE CASCADE,
    requests_per_s      double precision NULL CHECK (requests_per_s > 0),
    faces               bigint           NULL CHECK (faces >= 0),
    streams             integer          NULL CHECK (streams >= 0),
    sse_connections     integer          NULL CHECK (sse_connections >= 0),
    event_media_bytes   bigint           NULL CHECK (event_media_bytes >= 0),
    updated_at          timestamptz      NOT NULL DEFAULT now()
);

ALTER TABLE video_events ADD COLUMN media_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE video_events ALTER COLUMN crop_path DROP NOT NULL;
