"""Persistence: PostgreSQL control plane and LanceDB face tables."""
