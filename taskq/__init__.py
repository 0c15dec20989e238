"""taskq: an observability-first task queue stack (nginx -> FastAPI -> Celery/Redis -> workers)."""

__version__ = "0.1.0"
