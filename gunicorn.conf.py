"""Production gunicorn settings, read from the environment (`gunicorn wsgi:app`)."""

import os

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", 8))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 30))
graceful_timeout = 10
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG")  # off unless asked: it costs throughput
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# gunicorn 27 gives every instance one shared control socket in $HOME by default;
# side-by-side instances (tests, benchmarks, containers without a writable home)
# must not share or need it. GUNICORN_CONTROL_SOCKET=1 turns it back on.
control_socket_disable = os.environ.get("GUNICORN_CONTROL_SOCKET", "0") != "1"
