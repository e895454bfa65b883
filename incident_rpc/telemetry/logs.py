"""Our log records on stderr at LOG_LEVEL: gunicorn's line format, or one JSON object a line.

gunicorn sets up only its own loggers (`gunicorn.error`, `gunicorn.access`), which
do not propagate; without this, every record of the `incident_rpc` logger below
WARNING was lost and the rest came out bare, through logging's last resort. One
handler on the root logger, added once per process and only when nothing else (a
logging config, pytest) has set the root up.

Every record written during a request carries that request's id, and its action
and actor once known (request_ids.py): text lines end with `request_id=...`, JSON
objects have the fields `time`, `level`, `logger`, `message`, `request_id`,
`action`, `status`, `duration` (seconds) and `actor`. With LOG_FORMAT=json,
gunicorn's own loggers write JSON too (`gunicorn_logconfig`, for gunicorn.conf.py).

What never goes into a record: passwords, tokens, API keys, the secret key, request
bodies. Nothing here logs a body or a header but `X-Request-Id` (which must be sane,
request_ids.SANE); the access line names method, path, status, action and actor.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from incident_rpc.telemetry import request_ids

FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s%(context)s"  # gunicorn's
DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"
FORMATS = ("text", "json")
FIELDS = ("request_id", "action", "status", "duration", "actor")


class RequestContext(logging.Filter):
    """Adds the current request's fields to each record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_ids.current()
        for name in FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, getattr(current, name, None) if current else None)
        shown = [f"{name}={getattr(record, name)}" for name in ("request_id", "action", "actor")]
        record.context = (
            ""
            if record.request_id is None
            else " " + " ".join(item for item in shown if not item.endswith("=None"))
        )
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "context"):  # gunicorn's records come without our filter
            RequestContext().filter(record)
            if record.name == "gunicorn.access" and isinstance(record.args, dict):
                _from_access_atoms(record, record.args)
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({name: getattr(record, name) for name in FIELDS})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _from_access_atoms(record: logging.LogRecord, atoms: dict[str, Any]) -> None:
    """gunicorn's access line knows the status, the time and our X-Request-Id header."""
    record.request_id = atoms.get("{x-request-id}o") or None
    record.status = int(atoms["s"]) if str(atoms.get("s", "")).isdigit() else None
    record.duration = float(atoms["L"]) if atoms.get("L") else None


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(FORMAT, DATE_FORMAT)


def configure(level: str, log_format: str = "text", access_log: bool = False) -> None:
    """Idempotent: the master and then each worker (create_app) call it."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter(log_format))
        handler.addFilter(RequestContext())
        root.addHandler(handler)
    # Only ours: the root stays at WARNING, so libraries' chatter (alembic names its
    # migration context in every worker) stays out of the log.
    logging.getLogger("incident_rpc").setLevel(level)
    access = logging.getLogger("incident_rpc.access")
    if access_log and not access.handlers:  # on stdout, as gunicorn's own access log
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(formatter(log_format))
        handler.addFilter(RequestContext())
        access.addHandler(handler)
        access.propagate = False
        access.setLevel(logging.INFO)


def gunicorn_logconfig(log_format: str) -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: with json, its own loggers write JSON as well.

    gunicorn merges this over its defaults section by section, so the root logger is
    named too, without handlers: `configure` then adds ours."""
    if log_format != "json":
        return {}
    stream = {"class": "logging.StreamHandler", "formatter": "json"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "WARNING", "handlers": []},
        "loggers": {
            "gunicorn.error": {
                "level": "INFO",
                "handlers": ["error_console"],
                "propagate": False,
                "qualname": "gunicorn.error",
            },
            "gunicorn.access": {
                "level": "INFO",
                "handlers": ["console"],
                "propagate": False,
                "qualname": "gunicorn.access",
            },
        },  # fmt: skip
        "handlers": {
            "console": {**stream, "stream": "ext://sys.stdout"},
            "error_console": {**stream, "stream": "ext://sys.stderr"},
        },
        "formatters": {"json": {"()": JsonFormatter}},
    }
