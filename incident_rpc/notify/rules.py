"""A channel's rule: which changes it hears about. Pure functions over plain data.

A rule names event types (default `added` and `resolved`), a minimum severity, the
sources it takes (none named: all), whether silenced incidents count (default no) and,
optionally, re-notification: an incident of at least `renotify_min_severity` still
unacknowledged is announced again every `renotify_every` minutes, at most
`renotify_max` times.
"""

from typing import Any

EVENT_TYPES = ("added", "acknowledged", "resolved", "updated", "commented")
DEFAULT_EVENTS = ["added", "resolved"]
SEVERITIES = ("low", "medium", "high", "critical")
DEFAULT_RULE: dict[str, Any] = {
    "events": DEFAULT_EVENTS,
    "min_severity": "low",
    "sources": None,
    "include_silenced": False,
    "renotify_every": None,
    "renotify_max": 3,
    "renotify_min_severity": "high",
}


def with_defaults(rule: dict[str, Any] | None) -> dict[str, Any]:
    """The rule with every key, defaults filling what was not given."""
    return {**DEFAULT_RULE, **(rule or {})}


def rank(severity: str | None) -> int:
    """low 0 .. critical 3; an unknown severity ranks lowest."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def matches(rule: dict[str, Any], kind: str, incident: dict[str, Any], silenced: bool) -> bool:
    """Whether an event of `kind` about `incident` (its wire form) goes to the channel."""
    if kind not in rule["events"]:
        return False
    if silenced and not rule["include_silenced"]:
        return False
    if rank(incident.get("severity")) < rank(rule["min_severity"]):
        return False
    sources = rule["sources"]
    return not sources or incident.get("source") in sources
