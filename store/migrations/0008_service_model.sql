-- The embedding model of a service (facecore.embed.EMBEDDING_MODELS): its index shards hold that
-- model's embeddings, and its requests are embedded with it. Services made before have SFace's.

ALTER TABLE services ADD COLUMN model text NOT NULL DEFAULT 'sface';
