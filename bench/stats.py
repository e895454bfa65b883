"""`stats` over 1,000,000 incidents on PostgreSQL: the answer's time, and each query's plan.

A throwaway database gets a year of incidents (one every 31.5 s by default), shaped
like a real one: the last two days a mix of new, processing, completed and unknown,
older ones resolved (1 in 50 closed as fake, 1 in 97 left open), each acknowledged
within an hour and resolved within a day of that. Then `stats` for the last 30 days
(about 82,000 incidents), with and without `group_by`, is timed through HTTP on the
production gunicorn config, and the SQL it runs is printed with EXPLAIN ANALYZE.
`--span-days 11.6` puts all 1,000,000 incidents in the window instead: the worst case.

Target: the median answer under 300 ms.

    python bench/stats.py [--rows 1000000] [--span-days 365] [--requests 15]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from harness import ADMIN, DEFAULT_ADMIN_URL, Database, Gunicorn, instance_dir, seed_incidents

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
TARGET_MS = 300

SEED = """
INSERT INTO incidents (title, description, status, severity, source, created_by, created_at,
                       updated_at, last_seen_at, version, occurrences, assignee,
                       acknowledged_at, acknowledged_by, resolved_at, resolved_by)
SELECT NULL, 'Seeded incident ' || g, s.status,
       (ARRAY['low', 'medium', 'high', 'critical'])[1 + g %% 4],
       (ARRAY['operator', 'monitoring', 'partner', 'unknown'])[1 + g %% 4],
       'bench', s.created, s.created, s.created, 1, 1,
       (ARRAY['agent-a', 'agent-b', 'agent-c', NULL])[1 + g %% 4],
       CASE WHEN s.status IN ('new', 'unknown') THEN NULL ELSE s.created + s.ack END,
       CASE WHEN s.status IN ('new', 'unknown') THEN NULL ELSE 'agent-a' END,
       CASE WHEN s.status = 'completed' THEN s.created + s.ack + s.fix END,
       CASE WHEN s.status = 'completed' THEN 'agent-a' END
FROM generate_series(1, %(rows)s) AS g,
LATERAL (SELECT now() - make_interval(secs => g * %(gap)s) AS created,
                make_interval(secs => 30 + (g::bigint * 7919) %% 3600) AS ack,
                make_interval(secs => 60 + (g::bigint * 104729) %% 86400) AS fix,
                CASE WHEN g * %(gap)s < 2 * 86400
                     THEN (ARRAY['new', 'processing', 'completed', 'unknown'])[1 + g %% 4]
                     WHEN g %% 50 = 0 THEN 'fake'
                     WHEN g %% 97 = 0 THEN 'processing'
                     ELSE 'completed' END AS status) AS s
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--span-days", type=float, default=365, help="the seeded incidents' span")
    parser.add_argument("--requests", type=int, default=15, help="timed requests per shape")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    return parser.parse_args(argv)


def seed(database: Database, rows: int, span_days: float) -> float:
    started = time.monotonic()
    seed_incidents(database, SEED, {"rows": rows, "gap": span_days * 86400 / rows})
    return time.monotonic() - started


def time_stats(server: Gunicorn, token: str, params: dict[str, Any], count: int) -> list[float]:
    server.post("/rpc", {"action": "stats", "token": token, **params})  # warm: plans, caches
    times = []
    for _ in range(count):
        started = time.perf_counter()
        answer = server.post("/rpc", {"action": "stats", "token": token, **params})
        times.append((time.perf_counter() - started) * 1000)
        assert answer["status"] == 200, answer
    return times


def explain(database: Database, since: str, until: str, group_by: str | None) -> float:
    """EXPLAIN ANALYZE of each statement `stats` runs, printed; their total time in ms."""
    from sqlalchemy import create_engine

    from incident_rpc.actions import stats_measures  # the very SQL the action sends

    engine = create_engine(database.sqlalchemy_url, connect_args={"options": "-c TimeZone=UTC"})
    statements = _statements(since, until, group_by, stats_measures)
    total = 0.0
    with engine.connect() as connection:
        for title, sql in statements:
            rows = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql).all()
            plan = [row[0] for row in rows]
            total += float(plan[-1].split()[-2])  # "Execution Time: 12.345 ms"
            print(f"\n-- {title}\n" + "\n".join(plan))
    engine.dispose()
    return total


def _statements(since: str, until: str, group_by: str | None, measures: Any) -> list[tuple]:
    window = f"created_at >= '{since}' AND created_at < '{until}'"
    measured = measures._POSTGRES.format(
        key=group_by or "NULL", owner="",
        overall="GROUPING(key) = 1" if group_by else "true",
        outer_key="key" if group_by else "NULL",
        grouping="GROUP BY GROUPING SETS ((), (key))" if group_by else "",
    ).replace(":since", f"'{since}'").replace(":until", f"'{until}'")  # fmt: skip
    return [
        ("counts by status, severity, source and day",
         "SELECT status, severity, source, date(created_at) AS day, count(*) FROM incidents"
         f" WHERE {window} GROUP BY status, severity, source, day"),
        ("open now by severity, acknowledgement and age",
         "SELECT severity, acknowledged_at IS NULL, CASE WHEN created_at > now() - interval"
         " '1 hour' THEN 'under_1h' WHEN created_at > now() - interval '1 day' THEN '1h_24h'"
         " WHEN created_at > now() - interval '7 days' THEN '1d_7d' ELSE 'older' END AS age,"
         " count(*) FROM incidents WHERE status NOT IN ('completed', 'fake')"
         " GROUP BY 1, 2, 3"),
        ("resolved per day",
         "SELECT date(resolved_at) AS day, count(*) FROM incidents"
         f" WHERE resolved_at >= '{since}' AND resolved_at < '{until}' GROUP BY day"),
        (f"MTTA and MTTR{' by ' + group_by if group_by else ''}", measured),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    database = Database(args.admin_url).create()
    server = None
    try:
        env = {"DATABASE_URL": database.sqlalchemy_url, "INCIDENT_RPC_ENV": "production",
               "SECRET_KEY": "bench-secret-key-0123456789-abcdefghij", "ADMIN_USERNAME": ADMIN[0],
               "ADMIN_PASSWORD": ADMIN[1], "INSTANCE_PATH": instance_dir(),
               "LOG_LEVEL": "WARNING"}  # fmt: skip
        server = Gunicorn("wsgi:app", env, "/readyz").start()
        token = server.post("/rpc", {"action": "authorization", "username": ADMIN[0],
                                     "password": ADMIN[1]})["data"]["token"]  # fmt: skip
        seconds = seed(database, args.rows, args.span_days)
        print(f"seeded {args.rows:,} incidents over {args.span_days:g} days in {seconds:.0f} s")
        met = True
        for group_by in (None, "severity", "assignee"):
            params = {"group_by": group_by} if group_by else {}
            answer = server.post("/rpc", {"action": "stats", "token": token, **params})["data"]
            sql_ms = explain(database, answer["since"], answer["until"], group_by)
            times = time_stats(server, token, params, args.requests)
            median = statistics.median(times)
            met &= median < TARGET_MS
            verdict = "met" if median < TARGET_MS else "NOT MET"
            print(
                f"\nstats, last 30 days ({answer['total']:,} incidents,"
                f" {answer['open']['total']:,} open), group_by={group_by}: median {median:.0f} ms,"
                f" max {max(times):.0f} ms over {len(times)} requests;"
                f" the SQL alone {sql_ms:.0f} ms\n  [{verdict}] median < {TARGET_MS} ms"
            )
        return 0 if met else 1
    finally:
        if server is not None:
            server.stop()
        database.drop()


if __name__ == "__main__":
    sys.exit(main())
