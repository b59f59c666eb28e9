-- Sightings of faces remembered by a recognition service (recognize with remember_unknowns=true),
-- and the identities its unknown faces are grouped into. The embedding and crop of each sighting
-- also live in the service's LanceDB sighting tables (searched there); the embedding is kept here
-- too, so that the identities can be rebuilt from the control plane alone.
-- An identity's id is chosen by the service's identity keeper (ids are never reused); a promoted
-- or merged identity keeps its row (promoted_to: the subject it became; merged_into: the identity
-- its sightings joined), so that its id is not given again, and no longer lists as unknown.

CREATE TABLE unknown_identities (
    service_id   bigint      NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    id           bigint      NOT NULL CHECK (id > 0),
    ignored      boolean     NOT NULL DEFAULT false,
    promoted_to  text        NULL,
    merged_into  bigint      NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, id)
);

CREATE TABLE sightings (
    service_id   bigint      NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    id           uuid        NOT NULL,
    seen_at      timestamptz NOT NULL,
    source       text        NOT NULL,
    box          jsonb       NOT NULL,
    quality      real        NOT NULL,
    subject      text        NULL,
    identity_id  bigint      NULL,
    embedding    bytea       NOT NULL,
    PRIMARY KEY (service_id, id)
);

CREATE INDEX sightings_by_identity ON sightings (service_id, identity_id) WHERE identity_id IS NOT NULL;
CREATE INDEX sightings_by_time ON sightings (service_id, seen_at);
