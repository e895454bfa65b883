"""`stats`: what operators report on, computed in the database.

Four aggregate queries, each answered from an index (migration 0008_stats_indexes):

- counts of the incidents created in the window, by status, severity, source and day
  (one GROUP BY over the window, summed up here);
- MTTA (created -> acknowledged) and MTTR (created -> resolved) over the same
  incidents, overall and per group: on PostgreSQL `percentile_cont` with GROUPING
  SETS, so one pass answers both; SQLite has no percentiles, so there the durations
  of the window come back and are summed up here, with the same interpolation;
- the incidents open now, by severity, acknowledgement and age (a partial index
  holds only the open ones, whatever the window);
- the incidents resolved in the window, by day.

Incidents closed as `fake` count in `total`, `by_status` and `fake`, and nowhere
else: a false alarm must not make the team look faster or slower. A reporter gets
the same answer over the incidents it created (access/policy.py, confined_to). Days are UTC.
"""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, case, func, select

from incident_rpc.access import policy
from incident_rpc.actions import stats_measures
from incident_rpc.dispatch.registry import Context, action
from incident_rpc.extensions import db
from incident_rpc.models import Incident, Severity, Status, utcnow
from incident_rpc.schemas.fields import Timestamp
from incident_rpc.schemas.stats import StatsParams

INCIDENTS = Incident.__table__
COLUMNS = INCIDENTS.c
CLOSED = (Status.completed.value, Status.fake.value)
AGES = (("under_1h", timedelta(hours=1)), ("1h_24h", timedelta(days=1)),
        ("1d_7d", timedelta(days=7)))  # fmt: skip
_timestamp = Timestamp()


@action("stats", params=StatsParams(), role="reporter", reads_only=True)
def stats(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Counts, open incidents by age, per-day figures, MTTA and MTTR for a window."""
    since, until, group_by = params["since"], params["until"], params["group_by"]
    owner = policy.confined_to(ctx.caller)
    answer: dict[str, Any] = {
        "since": _timestamp.serialize("since", params),
        "until": _timestamp.serialize("until", params),
        "group_by": group_by,
    }
    answer.update(_counts(since, until, owner))
    answer["open"], answer["open_by_age"] = _open(utcnow(), owner)
    _add_resolved(answer["per_day"], since, until, owner)
    overall, groups = stats_measures.measures(db.session, since, until, owner, group_by)
    answer.update(overall)
    answer["groups"] = groups
    return answer


def _confined(query: Select, owner: str | None) -> Select:
    return query if owner is None else query.where(COLUMNS.created_by == owner)


def day_of(column: Any) -> Any:
    """The UTC calendar day of a timestamp column (PostgreSQL sessions run in UTC)."""
    return func.date(column)


def _days(since: datetime, until: datetime) -> list[str]:
    first, last = since.date(), (until - timedelta(microseconds=1)).date()
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def _counts(since: datetime, until: datetime, owner: str | None) -> dict[str, Any]:
    day = day_of(COLUMNS.created_at).label("day")
    query = _confined(
        select(COLUMNS.status, COLUMNS.severity, COLUMNS.source, day, func.count())
        .where(COLUMNS.created_at >= since, COLUMNS.created_at < until)
        .group_by(COLUMNS.status, COLUMNS.severity, COLUMNS.source, day),
        owner,
    )
    by_status: dict[str, int] = {}
    by_severity = {severity.value: 0 for severity in Severity}
    by_source: dict[str, int] = {}
    per_day = {day: {"day": day, "created": 0, "resolved": 0} for day in _days(since, until)}
    total = 0
    for status, severity, source, created_on, count in db.session.execute(query):
        total += count
        by_status[status] = by_status.get(status, 0) + count
        if status == Status.fake:
            continue
        by_severity[severity] = by_severity.get(severity, 0) + count
        by_source[source] = by_source.get(source, 0) + count
        row = per_day.get(str(created_on))
        if row is not None:
            row["created"] += count
    return {
        "total": total, "by_status": by_status, "by_severity": by_severity,
        "by_source": by_source, "per_day": list(per_day.values()),
        "fake": by_status.get(Status.fake.value, 0),
    }  # fmt: skip


def _open(now: datetime, owner: str | None) -> tuple[dict[str, Any], dict[str, int]]:
    """The incidents open now, whenever they were created, by age."""
    age = case(
        *[(COLUMNS.created_at > now - span, name) for name, span in AGES], else_="older"
    ).label("age")
    unacknowledged = COLUMNS.acknowledged_at.is_(None).label("unacknowledged")
    query = _confined(
        select(COLUMNS.severity, unacknowledged, age, func.count())
        .where(COLUMNS.status.not_in(CLOSED))
        .group_by(COLUMNS.severity, unacknowledged, age),
        owner,
    )
    by_severity = {severity.value: 0 for severity in Severity}
    summary: dict[str, Any] = {"total": 0, "unacknowledged": 0, "by_severity": by_severity}
    by_age = {name: 0 for name, _ in AGES} | {"older": 0}
    for severity, waiting, bucket, count in db.session.execute(query):
        summary["total"] += count
        summary["unacknowledged"] += count if waiting else 0
        summary["by_severity"][severity] = summary["by_severity"].get(severity, 0) + count
        by_age[bucket] += count
    return summary, by_age


def _add_resolved(
    per_day: list[dict[str, Any]], since: datetime, until: datetime, owner: str | None
) -> None:
    day = day_of(COLUMNS.resolved_at).label("day")
    query = _confined(
        select(day, func.count())
        .where(COLUMNS.resolved_at >= since, COLUMNS.resolved_at < until)
        .group_by(day),
        owner,
    )
    rows = {row["day"]: row for row in per_day}
    for resolved_on, count in db.session.execute(query):
        if str(resolved_on) in rows:
            rows[str(resolved_on)]["resolved"] = count
