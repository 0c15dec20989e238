"""The local stack: redis-server, nginx, API replicas, Celery workers and beat under
supervisord, all on loopback, all writing under one var directory."""
