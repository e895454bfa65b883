"""Our log records on stderr, in gunicorn's own line format, at LOG_LEVEL.

gunicorn sets up only its own loggers (`gunicorn.error`, `gunicorn.access`), which
do not propagate; without this, every record of the `incident_rpc` logger below
WARNING was lost and the rest came out bare, through logging's last resort. One
handler on the root logger, added once per process and only when nothing else (a
logging config, pytest) has set the root up. Structured logs later need only
another formatter here.
"""

import logging
import sys

FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"  # gunicorn's error_fmt
DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"


def configure(level: str) -> None:
    """Idempotent: the master and then each worker (create_app) call it."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        root.addHandler(handler)
    # Only ours: the root stays at WARNING, so libraries' chatter (alembic names its
    # migration context in every worker) stays out of the log.
    logging.getLogger("incident_rpc").setLevel(level)
