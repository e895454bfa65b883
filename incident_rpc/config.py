"""Settings, read once from the environment; docs/settings.md lists every one.

The readers below never raise: a value they cannot use is noted (`read_problems`)
and the default stands in, so that start-up (incident_rpc/startup.py, run by
gunicorn's master before any worker boots) can name every bad setting at once,
with its value and what it expects. A blank variable counts as unset, as compose
passes `VAR=` through as an empty string. Every setting has a development default
except the ones that would be unsafe in production (see startup.py).
"""

import math
import os
import secrets
import time
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ROOT = Path(__file__).resolve().parent.parent
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
WORKER_CLASSES = ("gevent", "gthread", "sync")
_problems: list[str] = []


def read_problems() -> list[str]:
    """What the readers could not use, one sentence per setting."""
    return list(_problems)


def _text(name: str, default: str | None = None) -> str | None:
    raw = os.environ.get(name)
    return raw if raw is not None and raw.strip() else default


def _note(name: str, raw: str, expected: str) -> None:
    _problems.append(f"{name} must be {expected}, not {raw!r}")


def _int(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = _text(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        if maximum is None:
            _note(name, raw, f"a whole number, at least {minimum}")
        else:
            _note(name, raw, f"between {minimum} and {maximum} (a whole number)")
        return default
    return value


def _float(name: str, default: float, minimum: float = 0) -> float:
    raw = _text(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum:
        _note(name, raw, f"a number, at least {minimum:g}")
        return default
    return value


def _seconds(name: str, default: float) -> float:
    """A wait or an interval: zero would mean a busy loop or no wait at all."""
    raw = _text(name)
    value = _float(name, default)
    if raw is not None and value == 0:
        _note(name, raw, "a number of seconds greater than 0")
        return default
    return value


def _bool(name: str, default: bool) -> bool:
    raw = _text(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off"}:
        return False
    _note(name, raw, "1 or 0 (or true/false, yes/no, on/off)")
    return default


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of `choices`, compared without case; the choice's own spelling is returned."""
    raw = _text(name)
    if raw is None:
        return default
    for choice in choices:
        if raw.strip().lower() == choice.lower():
            return choice
    _note(name, raw, f"one of {', '.join(choices)}")
    return default


def _schedule(name: str, default: str) -> tuple[float, ...]:
    """Seconds between attempts, comma-separated: "5,30,120"."""
    raw = _text(name) or default
    try:
        delays = tuple(float(part) for part in raw.split(","))
    except ValueError:
        delays = ()
    if not delays or not all(math.isfinite(d) and d > 0 for d in delays):
        _note(name, raw, "seconds greater than 0, comma-separated (e.g. 5,30,120)")
        return tuple(float(part) for part in default.split(","))
    return delays


INSTANCE = Path(_text("INSTANCE_PATH") or ROOT / "instance")


def with_psycopg2(url: str) -> str:
    """`postgresql://` means psycopg (3) to SQLAlchemy 2.1; we ship psycopg2."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url.removeprefix(prefix)
    return url


def _database_url() -> str:
    """DATABASE_URL, with DATABASE_PASSWORD put in: a password holding '@', '/' or ':'
    would break a URL written by hand (or by compose), so it may travel on its own."""
    url = _text("DATABASE_URL") or f"sqlite:///{INSTANCE / 'incident_rpc.sqlite3'}"
    password = _text("DATABASE_PASSWORD")
    try:
        parsed = make_url(with_psycopg2(url))
    except ArgumentError:
        parsed = None
    if parsed is None or parsed.get_backend_name() not in ("sqlite", "postgresql"):
        # The value is not repeated: it may hold a password.
        _problems.append(
            "DATABASE_URL must be a URL such as postgresql://user@host:5432/name"
            " or sqlite:////absolute/path.sqlite3"
        )
        return url
    if password is None:
        return url
    if parsed.get_backend_name() == "sqlite":
        _problems.append("DATABASE_PASSWORD is set, but DATABASE_URL is not a PostgreSQL URL")
        return url
    return parsed.set(password=password).render_as_string(hide_password=False)


class Config:
    """Attributes become `app.config` keys; `create_app(overrides)` can replace any."""

    ENV = _choice("INCIDENT_RPC_ENV", "development", ("development", "production"))
    SECRET_KEY = _text("SECRET_KEY")
    SQLALCHEMY_DATABASE_URI = _database_url()
    DB_CONNECT_TIMEOUT = _int("DB_CONNECT_TIMEOUT", 3, minimum=1)  # seconds before a 503
    DB_STATEMENT_TIMEOUT_MS = _int("DB_STATEMENT_TIMEOUT_MS", 15000, minimum=1)
    DB_POOL_SIZE = _int("DB_POOL_SIZE", 10, minimum=1)
    AUTO_MIGRATE = _bool("AUTO_MIGRATE", True)
    TOKEN_TTL = _int("TOKEN_TTL", 3600, minimum=1)
    ADMIN_USERNAME = _text("ADMIN_USERNAME")
    ADMIN_PASSWORD = _text("ADMIN_PASSWORD")
    MAX_CONTENT_LENGTH = _int("MAX_CONTENT_LENGTH", 1024 * 1024, minimum=1)
    MAX_BATCH = _int("MAX_BATCH", 1000, minimum=1)  # commands in one batch posted to /rpc
    BODY_TIMEOUT = _seconds("BODY_TIMEOUT", 10)  # seconds for a whole request body, else 408
    # Bytes of JSON that the answers of one batch may add up to (rpc.Batch.spend): a
    # batch of 1,000 creates of a full 1 MiB body answers under 2 MiB; 100 pages of
    # 1,000 incidents would be hundreds of MiB in a worker's memory.
    MAX_BATCH_ANSWER = _int("MAX_BATCH_ANSWER", 8 * 1024 * 1024, minimum=1)
    # Incidents one resolve_many/update_many may touch; at most 65,536 (one event each,
    # and event ids number at most that many per transaction: events.ID_SHIFT).
    MAX_BULK = _int("MAX_BULK", 10000, minimum=1, maximum=65536)
    REQUEST_ID_TTL = _int("REQUEST_ID_TTL", 24 * 3600, minimum=1)  # seconds a request_id lives
    LOG_LEVEL = _choice("LOG_LEVEL", "INFO", LOG_LEVELS)
    LOG_FORMAT = _choice("LOG_FORMAT", "text", LOG_FORMATS)  # json: one object a line
    ACCESS_LOG = _bool("ACCESS_LOG", False)  # a line per request on stdout (`make run`: on)
    METRICS_ENABLED = _bool("METRICS_ENABLED", True)  # GET /metrics and what it counts
    METRICS_TOKEN = _text("METRICS_TOKEN")  # set: /metrics wants "Authorization: Bearer <it>"
    # Teams and access (README, "Teams and access").
    REGISTRATION_ENABLED = _bool("REGISTRATION_ENABLED", False)  # `register` makes reporters
    LOGIN_THROTTLE_WINDOW = _int("LOGIN_THROTTLE_WINDOW", 300, minimum=1)  # seconds a count lives
    LOGIN_MAX_FAILURES = _int("LOGIN_MAX_FAILURES", 5)  # per username at one address; 0: off
    LOGIN_MAX_FAILURES_PER_ADDRESS = _int("LOGIN_MAX_FAILURES_PER_ADDRESS", 30)  # 0: off
    PROXY_FIX_X_FOR = _int("PROXY_FIX_X_FOR", 0)  # trusted proxies in front (X-Forwarded-For)
    CORS_ORIGINS = _text("CORS_ORIGINS")  # origins whose pages may call /rpc (board/cors.py)
    HTTP_CONCURRENCY = _int(
        "HTTP_CONCURRENCY", 8
    )  # requests at once per worker (runtime/admission.py)
    # /healthz: 503 once every slot has been held this long (runtime/admission.py); 0: never
    HEALTH_STALL_TIMEOUT = _float("HEALTH_STALL_TIMEOUT", 30)
    # Seconds a worker keeps the maintenance windows it read (actions/silencing.py); 0: per create
    SILENCE_CACHE_SECONDS = _float("SILENCE_CACHE_SECONDS", 1)
    # Seconds a worker keeps an API key it found live (access/keys.py); 0: read per request
    API_KEY_CACHE_SECONDS = _float("API_KEY_CACHE_SECONDS", 1)
    # Seconds a worker keeps the user a token names (access/auth.py); 0: read per request
    TOKEN_CACHE_SECONDS = _float("TOKEN_CACHE_SECONDS", 1)
    # Concurrent creates share a commit (dispatch/group_commit.py).
    GROUP_COMMIT = _bool("GROUP_COMMIT", True)
    # Change events (events/fanout.py, events/websocket.py); times in seconds.
    EVENTS_PING_INTERVAL = _seconds("EVENTS_PING_INTERVAL", 25)  # idle sockets; 2 missed: dead
    EVENTS_POLL_INTERVAL = _seconds("EVENTS_POLL_INTERVAL", 1)  # read the log even without a ring
    EVENTS_QUEUE_SIZE = _int("EVENTS_QUEUE_SIZE", 1000, minimum=1)  # per subscriber, then 1013
    EVENTS_SEND_TIMEOUT = _seconds("EVENTS_SEND_TIMEOUT", 30)  # a peer that reads nothing: dead
    EVENTS_AUTH_TIMEOUT = _seconds("EVENTS_AUTH_TIMEOUT", 10)  # for a first {"token": ...}
    EVENTS_REAUTH_INTERVAL = _seconds("EVENTS_REAUTH_INTERVAL", 60)  # revoked: closed within this
    # Outbound notifications (incident_rpc/notify/); times in seconds.
    NOTIFY_SENDER = _bool("NOTIFY_SENDER", True)  # gunicorn's master runs a sender process
    NOTIFY_SENDER_NICE = _int("NOTIFY_SENDER_NICE", 19, minimum=0, maximum=19)  # below workers
    NOTIFY_POLL_INTERVAL = _seconds("NOTIFY_POLL_INTERVAL", 1)  # look for due deliveries
    NOTIFY_LEASE = _seconds("NOTIFY_LEASE", 60)  # a claim unfinished this long is taken over
    NOTIFY_TIMEOUT = _seconds("NOTIFY_TIMEOUT", 10)  # one attempt's connect and each read
    NOTIFY_CONCURRENCY = _int("NOTIFY_CONCURRENCY", 8, minimum=1)  # attempts at once per sender
    # Seconds before each retry (with jitter; at least a Retry-After): about a day in all.
    NOTIFY_RETRY_SCHEDULE = _schedule(
        "NOTIFY_RETRY_SCHEDULE", "5,30,120,600,1800,3600,7200,14400,28800,43200"
    )
    NOTIFY_RENOTIFY_UNIT = _seconds("NOTIFY_RENOTIFY_UNIT", 60)  # a renotify_every minute
    WEBHOOK_ALLOW_PRIVATE = _bool("WEBHOOK_ALLOW_PRIVATE", False)  # loopback/private URLs
    TELEGRAM_API_URL = _text("TELEGRAM_API_URL") or "https://api.telegram.org"
    TELEGRAM_CHAT_INTERVAL = _seconds("TELEGRAM_CHAT_INTERVAL", 1)  # between messages to a chat
    TELEGRAM_PER_SECOND = _int("TELEGRAM_PER_SECOND", 30, minimum=1)  # messages from a sender
    TELEGRAM_DIGEST_MAX = _int("TELEGRAM_DIGEST_MAX", 200, minimum=1, maximum=300)


class Gunicorn:
    """gunicorn's own settings, used by gunicorn.conf.py and the container's health
    check; read here so that the one start-up check covers them too."""

    PORT = _int("PORT", 8000, minimum=1, maximum=65535)
    BIND = _text("GUNICORN_BIND") or f"0.0.0.0:{PORT}"
    WORKERS = _int("WEB_CONCURRENCY", os.cpu_count() or 2, minimum=1)
    WORKER_CLASS = _choice("GUNICORN_WORKER_CLASS", "gevent", WORKER_CLASSES)
    WORKER_CONNECTIONS = _int("GUNICORN_WORKER_CONNECTIONS", 4000, minimum=1)  # gevent
    THREADS = _int("GUNICORN_THREADS", 8, minimum=1)  # gthread only
    TIMEOUT = _int("GUNICORN_TIMEOUT", 30)
    ACCESS_LOG = _text("GUNICORN_ACCESS_LOG")  # off unless asked: it costs throughput
    CONTROL_SOCKET = _bool("GUNICORN_CONTROL_SOCKET", False)
    # Where the workers' metrics meet (telemetry/multiprocess.py); unset: a directory of
    # this run's own. Emptied at start-up either way.
    METRICS_DIR = _text("PROMETHEUS_MULTIPROC_DIR")


class ConfigError(RuntimeError):
    """The settings cannot run safely; the message says which one to fix.

    A RuntimeError, so that gunicorn prints it as "Error: ..." and exits with 1
    when it is raised in the master (gunicorn.conf.py's `on_starting`)."""


def resolve_secret_key(config: dict) -> None:
    """Production needs an explicit key; development makes one once and keeps it on disk."""
    if config.get("SECRET_KEY"):
        return
    if config["ENV"] == "production":
        raise ConfigError("SECRET_KEY must be set when INCIDENT_RPC_ENV=production")
    key_file = INSTANCE / "secret_key"
    INSTANCE.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: when several workers start at once, exactly one writes the key
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    except FileExistsError:
        pass
    for _ in range(50):  # another process may be between create and write
        key = key_file.read_text().strip()
        if key:
            config["SECRET_KEY"] = key
            return
        time.sleep(0.02)
    raise ConfigError(f"{key_file} is empty; delete it or set SECRET_KEY")
