"""Put on ``PYTHONPATH`` of the clock-skew drill's worker only (taskq/drills/skewed_worker.py):
its ``sitecustomize`` runs at interpreter start-up, before the worker's code."""
