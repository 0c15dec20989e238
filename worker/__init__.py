"""Celery workers and beat of taskq."""
