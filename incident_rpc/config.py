"""Settings, read once from the environment.

Every setting has a development default except the ones that would be unsafe in
production: there `SECRET_KEY` must be given (see `check_production`).
"""

import os
import secrets
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = Path(os.environ.get("INSTANCE_PATH", ROOT / "instance"))


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


class Config:
    """Attributes become `app.config` keys; `create_app(overrides)` can replace any."""

    ENV = os.environ.get("INCIDENT_RPC_ENV", "development")  # or "production"
    SECRET_KEY = os.environ.get("SECRET_KEY")
    SQLALCHEMY_DATABASE_URI = os.environ.get(
        "DATABASE_URL", f"sqlite:///{INSTANCE / 'incident_rpc.sqlite3'}"
    )
    DB_CONNECT_TIMEOUT = _int("DB_CONNECT_TIMEOUT", 3)  # seconds before a 503
    DB_STATEMENT_TIMEOUT_MS = _int("DB_STATEMENT_TIMEOUT_MS", 15000)
    DB_POOL_SIZE = _int("DB_POOL_SIZE", 10)
    AUTO_MIGRATE = _bool("AUTO_MIGRATE", True)
    TOKEN_TTL = _int("TOKEN_TTL", 3600)
    ADMIN_USERNAME = os.environ.get("ADMIN_USERNAME")
    ADMIN_PASSWORD = os.environ.get("ADMIN_PASSWORD")
    MAX_CONTENT_LENGTH = _int("MAX_CONTENT_LENGTH", 1024 * 1024)
    BODY_TIMEOUT = _float("BODY_TIMEOUT", 10)  # seconds for a whole request body, else 408
    MAX_BATCH = _int("MAX_BATCH", 1000)  # commands in one batch posted to /rpc
    # Bytes of JSON that the answers of one batch may add up to (rpc.Batch.spend): a
    # batch of 1,000 creates of a full 1 MiB body answers under 2 MiB; 100 pages of
    # 1,000 incidents would be hundreds of MiB in a worker's memory.
    MAX_BATCH_ANSWER = _int("MAX_BATCH_ANSWER", 8 * 1024 * 1024)
    # Incidents one resolve_many/update_many may touch; at most 65,536 (one event each,
    # and event ids number at most that many per transaction: events.ID_SHIFT).
    MAX_BULK = _int("MAX_BULK", 10000)
    REQUEST_ID_TTL = _int("REQUEST_ID_TTL", 24 * 3600)  # seconds a request_id is remembered
    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
    # Teams and access (README, "Teams and access").
    REGISTRATION_ENABLED = _bool("REGISTRATION_ENABLED", False)  # `register` makes reporters
    LOGIN_THROTTLE_WINDOW = _int("LOGIN_THROTTLE_WINDOW", 300)  # seconds a count lives
    LOGIN_MAX_FAILURES = _int("LOGIN_MAX_FAILURES", 5)  # per username at one address; 0: off
    LOGIN_MAX_FAILURES_PER_ADDRESS = _int("LOGIN_MAX_FAILURES_PER_ADDRESS", 30)  # 0: off
    PROXY_FIX_X_FOR = _int("PROXY_FIX_X_FOR", 0)  # trusted proxies in front (X-Forwarded-For)
    HTTP_CONCURRENCY = _int("HTTP_CONCURRENCY", 8)  # requests at once per worker (admission.py)
    # /healthz answers 503 once every slot has been held this long (admission.py); 0: never
    HEALTH_STALL_TIMEOUT = _float("HEALTH_STALL_TIMEOUT", 30)
    GROUP_COMMIT = _bool("GROUP_COMMIT", True)  # concurrent creates share a commit (grouping.py)
    # Change events (fanout.py, websocket.py); times in seconds.
    EVENTS_PING_INTERVAL = _float("EVENTS_PING_INTERVAL", 25)  # idle sockets; 2 missed: dead
    EVENTS_POLL_INTERVAL = _float("EVENTS_POLL_INTERVAL", 1)  # read the log even without a ring
    EVENTS_QUEUE_SIZE = _int("EVENTS_QUEUE_SIZE", 1000)  # per subscriber, then 1013 close
    EVENTS_SEND_TIMEOUT = _float("EVENTS_SEND_TIMEOUT", 30)  # a peer that reads nothing: dead
    EVENTS_AUTH_TIMEOUT = _float("EVENTS_AUTH_TIMEOUT", 10)  # for a first {"token": ...}
    EVENTS_REAUTH_INTERVAL = _float("EVENTS_REAUTH_INTERVAL", 60)  # revoked: closed within this


class ConfigError(RuntimeError):
    """The settings cannot run safely; the message says which one to fix."""


def check_limits(config: dict) -> None:
    if not 1 <= config["MAX_BULK"] <= 65536:
        raise ConfigError("MAX_BULK must be between 1 and 65536")
    if config["MAX_BATCH_ANSWER"] < 1:
        raise ConfigError("MAX_BATCH_ANSWER must be a positive number of bytes")


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


def with_psycopg2(url: str) -> str:
    """`postgresql://` means psycopg (3) to SQLAlchemy 2.1; we ship psycopg2."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url.removeprefix(prefix)
    return url
