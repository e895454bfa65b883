"""The service's Prometheus metrics, and the calls that move them.

Under gunicorn every worker writes its own values into PROMETHEUS_MULTIPROC_DIR
(multiprocess.py) and /metrics (metrics_endpoint.py) sums them up, so the answer
is the same whichever worker serves the scrape. Counters and histograms need
nothing more; the one gauge says how its workers' values combine (`livesum`: the
live workers' subscribers, added up).

The incident metrics are observed from committed events (`observe_events`, called
after each commit with the events it wrote), so a rolled-back change counts for
nothing and a change counts once however it came about (a command, a batch, an
update to `completed`, a bulk resolve). METRICS_ENABLED=0 turns every call here into
a no-op and /metrics into a 404.
"""

from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any

from flask import Flask
from prometheus_client import Counter, Gauge, Histogram

PREFIX = "incident_rpc"
# Seconds: a command takes milliseconds; people take minutes to hours, and days to resolve.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
ACKNOWLEDGE_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
RESOLVE_BUCKETS = (300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 259200, 604800)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)

REQUESTS = Counter(f"{PREFIX}_requests", "HTTP requests answered, by dialect, action and status",
                   ["dialect", "action", "status"])  # fmt: skip
REQUEST_SECONDS = Histogram(f"{PREFIX}_request_duration_seconds",
                            "Time to answer a request, by action", ["action"],
                            buckets=REQUEST_BUCKETS)  # fmt: skip
CREATED = Counter(f"{PREFIX}_incidents_created", "Incidents created, by severity and source",
                  ["severity", "source"])  # fmt: skip
ACKNOWLEDGED = Counter(f"{PREFIX}_incidents_acknowledged", "Incidents acknowledged, by severity",
                       ["severity"])  # fmt: skip
RESOLVED = Counter(f"{PREFIX}_incidents_resolved", "Incidents resolved, by severity", ["severity"])
TIME_TO_ACKNOWLEDGE = Histogram(f"{PREFIX}_time_to_acknowledge_seconds",
                                "From created to acknowledged, observed on acknowledgement",
                                buckets=ACKNOWLEDGE_BUCKETS)  # fmt: skip
TIME_TO_RESOLVE = Histogram(f"{PREFIX}_time_to_resolve_seconds",
                            "From created to resolved, observed on resolution",
                            buckets=RESOLVE_BUCKETS)  # fmt: skip
DEDUP_HITS = Counter(f"{PREFIX}_dedup_hits", "Creates that repeated an open incident's dedup_key")
GROUP_SIZE = Histogram(f"{PREFIX}_group_commit_size", "Commands that shared one group commit",
                       buckets=GROUP_BUCKETS)  # fmt: skip
SUBSCRIBERS = Gauge(f"{PREFIX}_websocket_subscribers", "Live WebSocket subscribers",
                    multiprocess_mode="livesum")  # fmt: skip
EVENTS_OFFERED = Counter(f"{PREFIX}_websocket_events_offered",
                         "Events handed to live subscribers, one per subscriber")  # fmt: skip

_state = {"enabled": False, "actions": frozenset()}


def init_app(app: Flask, actions: Iterable[str] = ()) -> None:
    """Switch the calls below on (METRICS_ENABLED); `actions` bounds the action label."""
    _state["enabled"] = app.config["METRICS_ENABLED"]
    _state["actions"] = frozenset(actions) | {"batch", "events", "none"}


def enabled() -> bool:
    return bool(_state["enabled"])


def prime(severities: Iterable[str], sources: Iterable[str]) -> None:
    """Every severity and source at 0: their series exist before their first incident."""
    for severity in severities:
        ACKNOWLEDGED.labels(severity)
        RESOLVED.labels(severity)
        for source in sources:
            CREATED.labels(severity, source)


def observe_request(dialect: str, action: str, status: int, seconds: float) -> None:
    if not _state["enabled"]:
        return
    action = action if action in _state["actions"] else "unknown"  # never the caller's text
    counter, histogram = _request_series(dialect, action, status)
    counter.inc()
    histogram.observe(seconds)


@lru_cache(maxsize=4096)  # the labels are bounded; a lookup in prometheus-client locks
def _request_series(dialect: str, action: str, status: int) -> tuple[Counter, Histogram]:
    return REQUESTS.labels(dialect, action, str(status)), REQUEST_SECONDS.labels(action)


@lru_cache(maxsize=256)
def _created(severity: str, source: str) -> Counter:
    return CREATED.labels(severity, source)


def dedup_hit() -> None:
    if _state["enabled"]:
        DEDUP_HITS.inc()


def group_commit(size: int) -> None:
    if _state["enabled"]:
        GROUP_SIZE.observe(size)


def subscribed(change: int) -> None:
    """+1 when a subscriber joins this worker's bus, -1 when it leaves."""
    if _state["enabled"]:
        SUBSCRIBERS.inc(change)


def offered(events: int) -> None:
    if _state["enabled"] and events:
        EVENTS_OFFERED.inc(events)


def observe_events(events: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Committed events, (type, data) as journal.py wrote them: created, acknowledged,
    resolved."""
    if not _state["enabled"]:
        return
    for kind, incident in events:
        if kind == "added":
            _created(incident["severity"], incident["source"]).inc()
        elif kind == "acknowledged":
            ACKNOWLEDGED.labels(incident["severity"]).inc()
            _observe(TIME_TO_ACKNOWLEDGE, incident, "acknowledged_at")
        elif kind == "resolved" or (kind == "updated" and _just_resolved(incident)):
            RESOLVED.labels(incident["severity"]).inc()
            _observe(TIME_TO_RESOLVE, incident, "resolved_at")


def _just_resolved(incident: dict[str, Any]) -> bool:
    """An update that completed the incident sets resolved_at to its own updated_at."""
    resolved = incident.get("resolved_at")
    return incident.get("status") == "completed" and resolved == incident.get("updated_at")


def _observe(histogram: Histogram, incident: dict[str, Any], end: str) -> None:
    if incident.get(end) and incident.get("created_at"):
        seconds = datetime.fromisoformat(incident[end]) - datetime.fromisoformat(
            incident["created_at"]
        )
        histogram.observe(max(seconds.total_seconds(), 0.0))
