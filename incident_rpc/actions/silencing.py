"""Which maintenance window (silence), if any, an arriving incident falls under.

`silenced_by` is called for every new incident, so it must cost next to nothing
however many windows are open. The windows that have not ended are read with one
indexed query (`ends_at`) and kept per process for SILENCE_CACHE_SECONDS. From
them, the ones active now are filed by what an incident must carry to match
(a dedup_key, labels, a source, or nothing), so an incident is compared only with
the windows it could meet; that filing holds until the next start or end among
them, so a window starts and ends on time whatever the cache holds. A window
created or expired in this process is seen at once (`forget`); one created or
expired by another worker or instance, within SILENCE_CACHE_SECONDS (0: a query
for every create).

Matchers, all of which must hold (an empty set is refused: schemas/silences.py):
`source` equal; `severity` at most this; `dedup_key` a prefix, or a glob when it
holds `*`, `?` or `[`; `text` contained in the title or description, ignoring
case; `labels` each equal to the one in `details.labels` (Alertmanager's, the
PagerDuty intake's). Of several matching windows, the oldest (lowest id) wins.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, select

from incident_rpc.extensions import db
from incident_rpc.models import Severity, Silence, utcnow

SEVERITY_RANK = {severity.value: rank for rank, severity in enumerate(Severity)}
DEFAULT_RANK = SEVERITY_RANK[Severity.medium]
GLOB = frozenset("*?[")
_CACHE = "incident_rpc.silences"  # app.extensions: this process's Snapshot
_SILENCES = Silence.__table__
_NOT_ENDED = (
    select(_SILENCES.c.id, _SILENCES.c.starts_at, _SILENCES.c.ends_at, _SILENCES.c.matchers)
    .where(_SILENCES.c.ends_at > bindparam("now"))
    .order_by(_SILENCES.c.id)
)


def is_glob(pattern: str) -> bool:
    return not GLOB.isdisjoint(pattern)


class Subject:
    """An arriving incident's columns, with what matching derives from them made once."""

    def __init__(self, incident: dict[str, Any]) -> None:
        self.incident = incident
        self.key: str | None = incident.get("dedup_key") or None
        details = incident.get("details")
        labels = details.get("labels") if isinstance(details, dict) else None
        self.labels: dict[str, Any] | None = labels if isinstance(labels, dict) and labels else None
        self.rank = SEVERITY_RANK.get(incident.get("severity") or "", DEFAULT_RANK)
        self._words: str | None = None

    @property
    def words(self) -> str:
        """Title and description, case-folded (for `text`)."""
        if self._words is None:
            title, description = self.incident.get("title"), self.incident.get("description")
            self._words = f"{title or ''}\n{description or ''}".casefold()
        return self._words


@dataclass(frozen=True)
class Window:
    """One window's times and matchers, in the form that is quickest to compare."""

    id: int
    starts_at: datetime
    ends_at: datetime
    source: str | None
    max_rank: int | None
    key: str | None
    key_is_glob: bool
    text: str | None  # case-folded
    labels: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, id: int, starts_at: datetime, ends_at: datetime, matchers: dict) -> "Window":
        key, text, severity = (
            matchers.get("dedup_key"),
            matchers.get("text"),
            matchers.get("severity"),
        )
        return cls(
            id, starts_at, ends_at, matchers.get("source"),
            SEVERITY_RANK[severity] if severity else None, key, bool(key and is_glob(key)),
            text.casefold() if text else None, tuple((matchers.get("labels") or {}).items()),
        )  # fmt: skip

    def matches(self, subject: Subject) -> bool:
        if self.source is not None and subject.incident.get("source") != self.source:
            return False
        if self.max_rank is not None and subject.rank > self.max_rank:
            return False
        if self.key is not None:
            if subject.key is None:
                return False
            if not (fnmatchcase(subject.key, self.key) if self.key_is_glob
                    else subject.key.startswith(self.key)):  # fmt: skip
                return False
        if self.labels:
            if subject.labels is None:
                return False
            if any(subject.labels.get(name) != value for name, value in self.labels):
                return False
        return self.text is None or self.text in subject.words


class Active:
    """The windows active at a moment, filed by what an incident needs to match them,
    and the moment (`until`) at which a start or an end changes which are active."""

    def __init__(self, windows: list[Window], now: datetime) -> None:
        active = [w for w in windows if w.starts_at <= now < w.ends_at]
        changes = [w.starts_at for w in windows if w.starts_at > now]
        self.until: datetime | None = min([*changes, *(w.ends_at for w in active)], default=None)
        self.keyed: list[Window] = []  # need a dedup_key
        self.labelled: list[Window] = []  # need labels
        self.by_source: dict[str, list[Window]] = {}  # need that source
        self.general: list[Window] = []  # need nothing in particular
        for window in active:  # in id order, so each list is too
            if window.key is not None:
                self.keyed.append(window)
            elif window.labels:
                self.labelled.append(window)
            elif window.source is not None:
                self.by_source.setdefault(window.source, []).append(window)
            else:
                self.general.append(window)

    def candidates(self, subject: Subject) -> Iterator[list[Window]]:
        if subject.key is not None:
            yield self.keyed
        if subject.labels is not None:
            yield self.labelled
        yield self.by_source.get(subject.incident.get("source") or "", [])
        yield self.general


class Snapshot:
    """The windows not ended when this process last read them, and which are active."""

    def __init__(self, windows: list[Window]) -> None:
        self.loaded_at = time.monotonic()
        self.windows = windows
        self._active = Active(windows, utcnow())

    def active(self) -> Active:
        until = self._active.until
        if until is not None and utcnow() >= until:  # a window started or ended meanwhile
            self._active = Active(self.windows, utcnow())
        return self._active


def snapshot() -> Snapshot:
    """This process's snapshot, read again when older than SILENCE_CACHE_SECONDS."""
    cached = current_app.extensions.get(_CACHE)
    ttl = current_app.config["SILENCE_CACHE_SECONDS"]
    if cached is None or time.monotonic() - cached.loaded_at >= ttl:
        rows = db.session.execute(_NOT_ENDED, {"now": utcnow()}).all()
        cached = Snapshot([Window.of(*row) for row in rows])
        current_app.extensions[_CACHE] = cached
    return cached


def forget() -> None:
    """After this process created or expired a window: read them again next time."""
    current_app.extensions.pop(_CACHE, None)


def silenced_by(incident: dict[str, Any]) -> int | None:
    """The id of the oldest active window whose matchers all hold for these columns."""
    found = snapshot()
    if not found.windows:
        return None
    subject, best = Subject(incident), None
    for windows in found.active().candidates(subject):
        for window in windows:
            if best is not None and window.id >= best:
                break
            if window.matches(subject):
                best = window.id
                break
    return best
