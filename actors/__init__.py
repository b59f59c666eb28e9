"""Ray actors and Serve deployments: embedder, index shards, video workers."""
