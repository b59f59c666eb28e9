"""A recognition service's gallery: its subjects (PostgreSQL) and faces (index shards) kept together.

Above ``actors`` (it drives the shards through :class:`actors.index_shard.ShardGroup`) and ``store``,
below ``serve_app``, ``batch_jobs`` and ``faces_cli``, which all change galleries through it.
"""
