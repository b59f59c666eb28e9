-- A video event's best shot is stored as a sighting of the stream's watchlist service: the event
-- links to it (its identity of unknown faces is read from the sighting, so that merges and splits
-- show). NULL: no sighting (a stream without a watchlist, or an event from before this migration).

ALTER TABLE video_events ADD COLUMN sighting_id uuid NULL;

CREATE INDEX sightings_by_id ON sightings (id);
