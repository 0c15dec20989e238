"""Celery tasks: risk computations, drills and maintenance."""
