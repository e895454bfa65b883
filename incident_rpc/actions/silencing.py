"""Which maintenance window (silence), if any, an arriving incident falls under.

`silenced_by` is called for every new incident, so it must cost next to nothing:
the windows that have not ended are read with one indexed query (`ends_at`) and
kept per process for SILENCE_CACHE_SECONDS; whether each is active is decided at
the moment of matching, so a window starts and ends on time whatever the cache
holds. A window created or expired in this process is seen at once (`forget`);
one created or expired by another worker or instance is seen within
SILENCE_CACHE_SECONDS (0: a query for every create).

Matchers, all of which must hold (an empty set is refused: schemas/silences.py):
`source` equal; `severity` at most this; `dedup_key` a prefix, or a glob when it
holds `*`, `?` or `[`; `text` contained in the title or description, ignoring
case; `labels` each equal to the one in `details.labels` (Alertmanager's, the
PagerDuty intake's).
"""

import time
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, select

from incident_rpc.extensions import db
from incident_rpc.models import Severity, Silence, utcnow

SEVERITY_RANK = {severity.value: rank for rank, severity in enumerate(Severity)}
GLOB = frozenset("*?[")
_CACHE = "incident_rpc.silences"  # app.extensions: (monotonic time loaded, windows)
_SILENCES = Silence.__table__
_NOT_ENDED = select(_SILENCES.c.id, _SILENCES.c.starts_at, _SILENCES.c.ends_at,
                    _SILENCES.c.matchers).where(_SILENCES.c.ends_at > bindparam("now"))  # fmt: skip


@dataclass(frozen=True)
class Window:
    id: int
    starts_at: datetime
    ends_at: datetime
    matchers: dict[str, Any]


def _load() -> list[Window]:
    rows = db.session.execute(_NOT_ENDED, {"now": utcnow()}).all()
    return [Window(*row) for row in rows]


def windows() -> list[Window]:
    """The windows not ended when last read, read again when older than the setting."""
    ttl = current_app.config["SILENCE_CACHE_SECONDS"]
    cached = current_app.extensions.get(_CACHE)
    now = time.monotonic()
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    loaded = _load()
    current_app.extensions[_CACHE] = (now, loaded)
    return loaded


def forget() -> None:
    """After this process created or expired a window: read them again next time."""
    current_app.extensions.pop(_CACHE, None)


def silenced_by(incident: dict[str, Any]) -> int | None:
    """The id of the first active window whose matchers all hold for these columns."""
    found = windows()
    if not found:
        return None
    now, subject = utcnow(), Subject(incident)
    for window in found:
        if window.starts_at <= now < window.ends_at and subject.matches(window.matchers):
            return window.id
    return None


class Subject:
    """An arriving incident's columns, with what matching derives from them made once."""

    def __init__(self, incident: dict[str, Any]) -> None:
        self.incident = incident
        self._words: str | None = None

    @property
    def words(self) -> str:
        """Title and description, case-folded (for `text`)."""
        if self._words is None:
            title, description = self.incident.get("title"), self.incident.get("description")
            self._words = f"{title or ''}\n{description or ''}".casefold()
        return self._words

    def matches(self, matchers: dict[str, Any]) -> bool:
        incident = self.incident
        if "source" in matchers and incident.get("source") != matchers["source"]:
            return False
        if "severity" in matchers:
            rank = SEVERITY_RANK.get(incident.get("severity") or Severity.medium.value, 1)
            if rank > SEVERITY_RANK[matchers["severity"]]:
                return False
        if "dedup_key" in matchers and not key_matches(matchers["dedup_key"], incident):
            return False
        if "text" in matchers and matchers["text"].casefold() not in self.words:
            return False
        return "labels" not in matchers or labels_match(matchers["labels"], incident)


def key_matches(pattern: str, incident: dict[str, Any]) -> bool:
    key = incident.get("dedup_key")
    if not key:
        return False
    return fnmatchcase(key, pattern) if is_glob(pattern) else key.startswith(pattern)


def labels_match(wanted: dict[str, str], incident: dict[str, Any]) -> bool:
    details = incident.get("details")
    labels = details.get("labels") if isinstance(details, dict) else None
    if not isinstance(labels, dict):
        return False
    return all(labels.get(name) == value for name, value in wanted.items())


def is_glob(pattern: str) -> bool:
    return not GLOB.isdisjoint(pattern)
