-- The sightings a recognition service may hold (NULL: the platform's default, FACES_QUOTA_SIGHTINGS).
-- Beyond it, recognize refuses to remember faces, and video events keep no sighting of their best shot.
-- Sightings expire after FACES_SIGHTING_RETENTION_DAYS: the expiry looks them up by age over all services.

ALTER TABLE service_quotas ADD COLUMN sightings bigint NULL CHECK (sightings >= 0);
CREATE INDEX sightings_by_age ON sightings (seen_at);
