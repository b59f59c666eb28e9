"""A service's face index without Ray: its layout over shards and the shard's in-memory search index."""
