"""Production gunicorn settings, read from the environment (`gunicorn wsgi:app`).

gevent workers: each WebSocket subscriber holds its connection for hours, and a
greenlet per socket costs a few kB where a gthread worker would pin an OS thread
(two, with simple-websocket's reader) and stop serving HTTP once its threads are
all taken by sockets. Measurements and the trade-offs: README, "Worker model".
"""

import signal

from incident_rpc import startup
from incident_rpc.config import Config, Gunicorn

# Read (and checked, in on_starting) with the app's settings: incident_rpc/config.py.
bind = Gunicorn.BIND
workers = Gunicorn.WORKERS
worker_class = Gunicorn.WORKER_CLASS
worker_connections = Gunicorn.WORKER_CONNECTIONS  # gevent
threads = Gunicorn.THREADS  # gthread only
timeout = Gunicorn.TIMEOUT
graceful_timeout = 10
keepalive = 5
accesslog = Gunicorn.ACCESS_LOG  # off unless asked: it costs throughput
errorlog = "-"
loglevel = Config.LOG_LEVEL.lower()
# gunicorn 27 gives every instance one shared control socket in $HOME by default;
# side-by-side instances (tests, benchmarks, containers without a writable home)
# must not share or need it. GUNICORN_CONTROL_SOCKET=1 turns it back on.
control_socket_disable = not Gunicorn.CONTROL_SOCKET


def on_starting(server) -> None:
    """In the master, before any worker boots: every setting is checked here, so that a
    bad one stops gunicorn with one message (a ConfigError, which gunicorn prints as
    "Error: ..." before it exits 1) instead of each worker failing to boot."""
    startup.on_starting()


def _is_gevent(worker) -> bool:
    return type(worker).__module__.endswith("ggevent")


def post_fork(server, worker) -> None:
    """Before the app loads: psycopg2 must wait on gevent, not block the whole worker,
    and never longer than the database settings allow (incident_rpc/green.py)."""
    if _is_gevent(worker):
        from incident_rpc import green

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
