"""Ray Serve application: CompreFace-compatible REST API over the embedder and index shards."""
