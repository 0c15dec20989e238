"""The HTTP API of taskq (FastAPI)."""
