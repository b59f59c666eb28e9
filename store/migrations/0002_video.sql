-- Video: streams (configuration), their live status (written by the stream workers) and events.
-- Event crops and frames are JPEG files under the data dir; rows hold their relative paths.

CREATE TABLE video_streams (
    id                    bigserial        PRIMARY KEY,
    name                  text             NOT NULL,
    owner_service_id      bigint           NULL REFERENCES services (id) ON DELETE CASCADE,
    source_url            text             NOT NULL,
    watchlist_service_id  bigint           NULL REFERENCES services (id) ON DELETE SET NULL,
    max_fps               double precision NOT NULL CHECK (max_fps >= 0),
    min_face_size         integer          NOT NULL CHECK (min_face_size >= 0),
    roi                   double precision[] NULL,
    mode                  text             NOT NULL CHECK (mode IN ('realtime', 'overall')),
    det_prob_threshold    double precision NULL CHECK (det_prob_threshold BETWEEN 0 AND 1),
    save_frame            boolean          NOT NULL DEFAULT false,
    enabled               boolean          NOT NULL DEFAULT true,
    webhook_url           text             NULL,
    webhook_secret        text             NULL,
    created_at            timestamptz      NOT NULL DEFAULT now(),
    updated_at            timestamptz      NOT NULL DEFAULT now()
);

CREATE TABLE video_stream_status (
    stream_id   bigint           PRIMARY KEY REFERENCES video_streams (id) ON DELETE CASCADE,
    state       text             NOT NULL,
    reason      text             NULL,
    digest      text             NULL,   -- the settings the worker ran with (Stream.settings_digest)
    frames      bigint           NOT NULL DEFAULT 0,
    faces       bigint           NOT NULL DEFAULT 0,
    events      bigint           NOT NULL DEFAULT 0,
    fps         double precision NOT NULL DEFAULT 0,
    started_at  timestamptz      NULL,
    updated_at  timestamptz      NOT NULL DEFAULT now()
);

CREATE TABLE video_events (
    id               bigserial        PRIMARY KEY,
    stream_id        bigint           NOT NULL REFERENCES video_streams (id) ON DELETE CASCADE,
    track_id         text             NOT NULL,
    reason           text             NOT NULL CHECK (reason IN ('appeared', 'better_shot', 'ended')),
    first_seen       timestamptz      NOT NULL,
    last_seen        timestamptz      NOT NULL,
    box              real[]           NOT NULL,
    quality          real             NOT NULL,
    detection_score  real             NOT NULL,
    subject          text             NULL,
    similarity       real             NULL,
    crop_path        text             NOT NULL,
    frame_path       text             NULL,
    created_at       timestamptz      NOT NULL DEFAULT now()
);

CREATE INDEX video_events_stream ON video_events (stream_id, id);
CREATE INDEX video_events_subject ON video_events (subject, id);
CREATE INDEX video_events_created ON video_events (created_at);
