"""GET /metrics: the Prometheus text format, the same whichever worker answers.

Under gunicorn the workers' values are summed from PROMETHEUS_MULTIPROC_DIR
(telemetry/multiprocess.py); alone (the CLI, an in-process app) the process's own
registry answers. Two kinds of value are read here at scrape time instead: the open
incidents by severity and status, counted in the database (from the partial index
ix_incidents_open) at most once every OPEN_CACHE_SECONDS per worker, and the process
metrics of the worker answering (prometheus-client cannot add up processes' CPU and
memory). The incident counters start at 0 for every severity and source, so that a
series exists (and `rate` works) before the first incident of its kind. With
METRICS_TOKEN set, the scrape needs `Authorization: Bearer <token>`.
"""

import hmac
import logging
import threading
import time
from typing import Any

from flask import Blueprint, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from incident_rpc.errors import NotFound, Unauthorized
from incident_rpc.extensions import db
from incident_rpc.http.responses import bearer_token
from incident_rpc.models import Incident, Severity, Source, Status
from incident_rpc.telemetry import metrics

log = logging.getLogger("incident_rpc")
bp = Blueprint("metrics", __name__)
OPEN_CACHE_SECONDS = 5.0
OPEN_STATUSES = [status.value for status in Status if status not in (Status.completed, Status.fake)]
COLUMNS = Incident.__table__.c


class OpenIncidents:
    """incident_rpc_open_incidents{severity, status}, counted at scrape time, cached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] | None = None
        self._read_at = 0.0

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{metrics.PREFIX}_open_incidents", "Open incidents now, by severity and status",
            labels=["severity", "status"],
        )  # fmt: skip
        counts = self._current()
        if counts is not None:
            for severity in Severity:
                for status in OPEN_STATUSES:
                    family.add_metric([severity.value, status], counts.get((severity, status), 0))
        return [family]

    def _current(self) -> dict[tuple[str, str], int] | None:
        with self._lock:
            if self._counts is None or time.monotonic() - self._read_at > OPEN_CACHE_SECONDS:
                try:
                    self._counts = _count_open()
                    self._read_at = time.monotonic()
                except Exception as error:  # the database is away: say nothing, not 0
                    log.warning("open incidents for /metrics: %s", type(error).__name__)
                    return None
            return self._counts


def _count_open() -> dict[tuple[str, str], int]:
    query = (
        select(COLUMNS.severity, COLUMNS.status, func.count())
        .where(COLUMNS.status.in_(OPEN_STATUSES))
        .group_by(COLUMNS.severity, COLUMNS.status)
    )
    try:
        return {(severity, status): n for severity, status, n in db.session.execute(query)}
    finally:
        db.session.rollback()


_registry: dict[str, Any] = {}
_registry_lock = threading.Lock()


def registry() -> CollectorRegistry:
    """This process's scrape registry, made once."""
    with _registry_lock:
        if "registry" not in _registry:
            if values.ValueClass is values.MutexValue:  # one process: its own values
                scraped = REGISTRY
            else:
                scraped = CollectorRegistry()
                MultiProcessCollector(scraped)
                ProcessCollector(registry=scraped)
            scraped.register(OpenIncidents())
            metrics.prime([s.value for s in Severity], [s.value for s in Source])
            _registry["registry"] = scraped
        return _registry["registry"]


@bp.route("/metrics", methods=["GET"])
def scrape() -> Response:
    if not metrics.enabled():
        raise NotFound("not found")
    expected = current_app.config["METRICS_TOKEN"]
    if expected:
        sent = bearer_token() or ""
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Unauthorized("a valid bearer token is required for /metrics")
    # The classic text format (our names need no escaping): every Prometheus 2.x reads it.
    return Response(generate_latest(registry()), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
