"""MTTA and MTTR of a window's incidents: count, mean and percentiles, overall and per group.

Time to acknowledge is created -> acknowledged, time to resolve created -> resolved,
in seconds, over the incidents created in the window that are not `fake`; each
measure counts only the incidents that have its end (an open incident has no time
to resolve yet). PostgreSQL answers everything in one statement: `percentile_cont`
(linear interpolation) under GROUPING SETS, the empty set being the overall row.
SQLite has neither, so its durations come back and are summed up here with the same
interpolation, which is fine for the windows a SQLite installation holds.
"""

import math
from datetime import datetime
from typing import Any

from sqlalchemy import func, literal, select, text
from sqlalchemy.orm import Session

from incident_rpc.models import Incident, Status

PERCENTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
COLUMNS = Incident.__table__.c
Measure = dict[str, Any]  # {"count": n, "mean": s, "p50": s, "p90": s, "p99": s}

# date_part, not EXTRACT: EXTRACT answers numeric, and sorting 80,000 numerics for the
# percentiles took four times as long as sorting doubles.
# The group key is one of schemas/stats.py, GROUP_BY, never the caller's text.
_POSTGRES = """
WITH measured AS (
    SELECT {key} AS key,
           date_part('epoch', acknowledged_at - created_at) AS tta,
           date_part('epoch', resolved_at - created_at) AS ttr
    FROM incidents
    WHERE created_at >= :since AND created_at < :until AND status <> 'fake' {owner}
)
SELECT {overall} AS overall, {outer_key} AS key, count(*) AS incidents,
       count(tta), avg(tta), percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY tta),
       count(ttr), avg(ttr), percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY ttr)
FROM measured
{grouping}
"""


def measures(
    session: Session, since: datetime, until: datetime, owner: str | None, group_by: str | None
) -> tuple[dict[str, Measure], list[dict[str, Any]]]:
    """({"mtta": ..., "mttr": ...}, groups): the groups largest first, [] without group_by."""
    if session.get_bind().dialect.name == "postgresql":
        rows = _postgres_rows(session, since, until, owner, group_by)
    else:
        rows = _sqlite_rows(session, since, until, owner, group_by)
    overall = {"mtta": empty(), "mttr": empty()}
    groups = []
    for is_overall, key, count, mtta, mttr in rows:
        if is_overall:
            overall = {"mtta": mtta, "mttr": mttr}
        else:
            groups.append({"key": key, "count": count, "mtta": mtta, "mttr": mttr})
    groups.sort(key=lambda group: (-group["count"], str(group["key"])))
    return overall, groups


def empty() -> Measure:
    return {"count": 0, "mean": None, **{name: None for name, _ in PERCENTILES}}


def _measure(count: int, mean: float | None, percentiles: list[float] | None) -> Measure:
    if not count:
        return empty()
    values = dict(zip((name for name, _ in PERCENTILES), percentiles or [], strict=True))
    return {"count": count, "mean": _round(mean), **{k: _round(v) for k, v in values.items()}}


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(float(seconds), 3)


def _postgres_rows(session, since, until, owner, group_by) -> list[tuple]:
    sql = _POSTGRES.format(
        key=group_by or "NULL",
        owner="AND created_by = :owner" if owner is not None else "",
        overall="GROUPING(key) = 1" if group_by else "true",
        outer_key="key" if group_by else "NULL",
        grouping="GROUP BY GROUPING SETS ((), (key))" if group_by else "",
    )
    values = {"since": since, "until": until, "owner": owner}
    return [
        (overall, key, incidents, _measure(*row[3:6]), _measure(*row[6:9]))
        for row in session.execute(text(sql), values)
        for overall, key, incidents in [row[:3]]
    ]


def _seconds_between(later: Any, earlier: Any) -> Any:
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _sqlite_rows(session, since, until, owner, group_by) -> list[tuple]:
    key = COLUMNS[group_by] if group_by else literal(None)
    query = select(
        key,
        _seconds_between(COLUMNS.acknowledged_at, COLUMNS.created_at),
        _seconds_between(COLUMNS.resolved_at, COLUMNS.created_at),
    ).where(COLUMNS.created_at >= since, COLUMNS.created_at < until, COLUMNS.status != Status.fake)
    if owner is not None:
        query = query.where(COLUMNS.created_by == owner)
    buckets: dict[Any, tuple[list[float], list[float]]] = {}
    everything: tuple[list[float], list[float]] = ([], [])
    counts: dict[Any, int] = {}
    for group, tta, ttr in session.execute(query):
        counts[group] = counts.get(group, 0) + 1
        for durations in (everything, buckets.setdefault(group, ([], []))):
            if tta is not None:
                durations[0].append(tta)
            if ttr is not None:
                durations[1].append(ttr)
    rows = [(True, None, sum(counts.values()), *map(summarize, everything))]
    if group_by:
        rows += [(False, g, counts[g], *map(summarize, d)) for g, d in buckets.items()]
    return rows


def summarize(durations: list[float]) -> Measure:
    """count, mean and percentile_cont's percentiles of some durations, in Python."""
    if not durations:
        return empty()
    ordered = sorted(durations)
    mean = math.fsum(ordered) / len(ordered)
    return _measure(len(ordered), mean, [percentile_cont(ordered, p) for _, p in PERCENTILES])


def percentile_cont(ordered: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the nearest ranks."""
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)
