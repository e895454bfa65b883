"""Production gunicorn settings, read from the environment (`gunicorn wsgi:app`).

gevent workers: each WebSocket subscriber holds its connection for hours, and a
greenlet per socket costs a few kB where a gthread worker would pin an OS thread
(two, with simple-websocket's reader) and stop serving HTTP once its threads are
all taken by sockets. The trade-offs: docs/design/worker-model.md.
"""

import os
import signal

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", 4000))  # gevent
threads = int(os.environ.get("GUNICORN_THREADS", 8))  # gthread only
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


def _is_gevent(worker) -> bool:
    return type(worker).__module__.endswith("ggevent")


def post_fork(server, worker) -> None:
    """Before the app loads: psycopg2 must wait on gevent, not block the whole worker,
    and never longer than the database settings allow (incident_rpc/green.py)."""
    if _is_gevent(worker):
        from incident_rpc import green
        from incident_rpc.config import Config

        connect = Config.DB_CONNECT_TIMEOUT
        green.install(connect, Config.DB_STATEMENT_TIMEOUT_MS / 1000 + connect)


def post_worker_init(worker) -> None:
    """On SIGTERM, close every event socket with 1001 first, so that clients resume
    elsewhere at once instead of hanging until the graceful timeout."""
    stop = worker.handle_exit

    def close_sockets_then_stop(signum, frame) -> None:
        from incident_rpc import fanout

        fanout.close_all()
        stop(signum, frame)

    signal.signal(signal.SIGTERM, close_sockets_then_stop)
