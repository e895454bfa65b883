"""Production gunicorn settings, read from the environment (`gunicorn wsgi:app`).

gevent workers: each WebSocket subscriber holds its connection for hours, and a
greenlet per socket costs a few kB where a gthread worker would pin an OS thread
(two, with simple-websocket's reader) and stop serving HTTP once its threads are
all taken by sockets. The trade-offs: docs/design/worker-model.md.
"""

import json
import os
import signal
import socket
import time

from gunicorn import util as gunicorn_util

from incident_rpc import notifier, startup
from incident_rpc.access import revocations  # noqa: F401  (made here, so the workers share it)
from incident_rpc.config import Config, Gunicorn
from incident_rpc.notify import wakeup
from incident_rpc.telemetry import logs, multiprocess

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
logconfig_dict = logs.gunicorn_logconfig(Config.LOG_FORMAT)  # LOG_FORMAT=json: gunicorn's too
# gunicorn's own access line (GUNICORN_ACCESS_LOG) names the request's id as well.
# Method and path, never the query string: /ws?token=... carries a token.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'
# gunicorn 27 gives every instance one shared control socket in $HOME by default;
# side-by-side instances (tests, benchmarks, containers without a writable home)
# must not share or need it. GUNICORN_CONTROL_SOCKET=1 turns it back on.
control_socket_disable = not Gunicorn.CONTROL_SOCKET


def on_starting(server) -> None:
    """In the master, before any worker boots: every setting is checked here, so that a
    bad one stops gunicorn with one message (a ConfigError, which gunicorn prints as
    "Error: ..." before it exits 1) instead of each worker failing to boot."""
    startup.on_starting()
    if Config.METRICS_ENABLED:  # before any worker imports prometheus_client
        server.metrics_dir = multiprocess.prepare(Gunicorn.METRICS_DIR)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = server.metrics_dir


def when_ready(server) -> None:
    """The notification sender runs beside the workers, in a process of its own
    (incident_rpc/notifier.py), started before them so that they inherit its doorbell."""
    if Config.NOTIFY_SENDER:
        server.notifier = notifier.Supervisor()
        server.notifier.start()


def child_exit(server, worker) -> None:
    """In the master: a worker's live gauges (its subscribers) no longer count."""
    if Config.METRICS_ENABLED:
        multiprocess.mark_dead(worker.pid)


def on_exit(server) -> None:
    """The sender stops with its master; the directory made for this run goes with it
    (an operator's own one stays)."""
    if getattr(server, "notifier", None) is not None:
        server.notifier.stop()
    if Config.METRICS_ENABLED and Gunicorn.METRICS_DIR is None:
        multiprocess.remove(server.metrics_dir)


def _is_gevent(worker) -> bool:
    return type(worker).__module__.endswith("ggevent")


def post_fork(server, worker) -> None:
    """Before the app loads: psycopg2 must wait on gevent, not block the whole worker,
    and never longer than the database settings allow (runtime/waits.py)."""
    wakeup.close_read_end()
    if _is_gevent(worker):
        from incident_rpc.runtime import waits

        connect = Config.DB_CONNECT_TIMEOUT
        waits.install(connect, Config.DB_STATEMENT_TIMEOUT_MS / 1000 + connect)


def post_worker_init(worker) -> None:
    """On SIGTERM, close every event socket with 1001 first, so that clients resume
    elsewhere at once instead of hanging until the graceful timeout."""
    stop = worker.handle_exit

    def close_sockets_then_stop(signum, frame) -> None:
        from incident_rpc.events import fanout

        fanout.close_all()
        stop(signum, frame)

    signal.signal(signal.SIGTERM, close_sockets_then_stop)


# gunicorn answers some requests itself, before the app sees them: a malformed request
# line or header (400), a request line over 4094 bytes (414), too many or too large
# headers (431), a transfer coding it does not know (501). Its page is HTML; our
# clients parse JSON. gunicorn 27 writes all of them through `util.write_error`
# (workers/base.py, `handle_error`), so that is where the envelope goes in.
# test_availability.py checks that this still holds.
REFUSAL_LINGER, REFUSAL_DRAIN = 2.0, 64 * 1024 * 1024  # seconds, bytes (request_body.MAX_DRAIN)
_REFUSALS = {
    400: "the HTTP request is malformed",
    403: "the request is forbidden",
    414: "the request line is too long",
    417: "the expectation cannot be met",
    431: "the request headers are too large",
    501: "the transfer coding is not supported",
}


def write_envelope(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's refusal as the envelope. Not its detail (`mesg`): that quotes the
    request line or a header, and either may carry a token; gunicorn logs it."""
    error = _REFUSALS.get(status_int, "internal error" if status_int >= 500 else reason)
    envelope = {"success": False, "error": error, "status": status_int, "data": {}}
    body = json.dumps(envelope, separators=(",", ":"))
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, (head + body).encode("latin-1"))
    _linger(sock, time.monotonic() + REFUSAL_LINGER)


def _linger(sock, deadline: float) -> None:
    """Read (and drop) what the client still sends, until it closes or the deadline:
    gunicorn closes next, and a socket closed with bytes unread resets the connection,
    so a client still sending its body would lose the answer."""
    try:
        sock.shutdown(socket.SHUT_WR)
        dropped = 0
        while dropped < REFUSAL_DRAIN and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            piece = sock.recv(1 << 20)
            if not piece:
                return
            dropped += len(piece)
    except OSError:  # reset by the peer, or the deadline
        return


gunicorn_util.write_error = write_envelope
