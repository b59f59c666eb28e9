-- The sightings a recognition service may hold (NULL: the platform's default, FACES_QUOTA_SIGHTINGS).
-- Beyond it, recognize refuses to remember faces, and video events keep no sighting of their best shot.

ALTER TABLE service_quotas ADD COLUMN sightings bigint NULL CHECK (sightings >= 0);
