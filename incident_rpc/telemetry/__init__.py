"""Telemetry: request ids, structured logs, Prometheus metrics (a leaf: it imports
nothing of the package, so every layer may use it).

Nothing is imported here: gunicorn's master loads `logs` and `multiprocess` before
PROMETHEUS_MULTIPROC_DIR is set, and prometheus_client must not be imported before.
"""
