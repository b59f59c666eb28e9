-- Read replicas of a service's index shards, set per service through the admin API. NULL means the
-- platform's default (FACES_SHARD_REPLICAS). Applied when the service's shards start (see
-- actors/index_shard.py).

ALTER TABLE services ADD COLUMN shard_replicas integer NULL CHECK (shard_replicas BETWEEN 1 AND 16);
