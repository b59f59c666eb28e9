"""FastAPI routers, one per resource."""
