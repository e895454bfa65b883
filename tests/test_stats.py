"""`stats` against a real server: the database's figures equal a computation by hand.

Incidents with known timestamps go straight into the server's database (a command
cannot back-date an acknowledgement), then `stats` must answer exactly what Python
computes from the same rows: counts, ages, per-day figures, and MTTA and MTTR with
percentile_cont's interpolation (PostgreSQL's own, or ours on SQLite).
"""

import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, delete, insert
from support import ADMIN, ROOT, Server

import client as client_py
from incident_rpc.config import with_psycopg2
from incident_rpc.models import Incident

NOW = datetime.now(UTC).replace(microsecond=0)
SINCE, UNTIL = NOW - timedelta(days=10), NOW - timedelta(days=1)
INCIDENTS = Incident.__table__


@pytest.fixture(scope="module")
def stats_server(new_database_url, tmp_path_factory) -> Iterator[Server]:
    """A server of this module's own: the figures cover every incident in its database."""
    running = Server(new_database_url(), tmp_path_factory.mktemp("instance")).start()
    yield running
    running.stop_soon()


def row(created: datetime, number: int, **columns: Any) -> dict[str, Any]:
    values = {"description": f"seeded {number}", "status": "new", "severity": "medium",
              "source": "monitoring", "created_by": "admin", "created_at": created,
              "updated_at": created, "last_seen_at": created, "version": 1, "occurrences": 1,
              "acknowledged_at": None, "resolved_at": None, "assignee": None}  # fmt: skip
    # Every row names every column: a many-row INSERT takes its columns from the first.
    return values | columns


def seed(server: Server, rows: list[dict[str, Any]]) -> None:
    engine = create_engine(with_psycopg2(server.database_url))
    with engine.begin() as connection:
        connection.execute(delete(INCIDENTS))
        connection.execute(insert(INCIDENTS), rows)
    engine.dispose()


def percentile_cont(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def expected_measure(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None}
    return {"count": len(values), "mean": round(sum(values) / len(values), 3),
            **{name: round(percentile_cont(values, p), 3)
               for name, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}}  # fmt: skip


def assert_measure(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual["count"] == expected["count"]
    for name in ("mean", "p50", "p90", "p99"):
        if expected[name] is None:
            assert actual[name] is None, (name, actual)
        else:
            assert actual[name] == pytest.approx(expected[name], abs=0.002), (name, actual)


@pytest.fixture(scope="module")
def seeded(stats_server: Server) -> list[dict[str, Any]]:
    """Some 300 incidents: most in the window, some before and after it, some fake."""
    pick = random.Random(13)
    rows = []
    for number in range(300):
        created = NOW - timedelta(seconds=pick.uniform(0, 12 * 86400))
        status = pick.choice(["new", "processing", "completed", "completed", "fake", "unknown"])
        columns: dict[str, Any] = {
            "status": status,
            "severity": pick.choice(["low", "medium", "high", "critical"]),
            "source": pick.choice(["monitoring", "operator", "partner"]),
            "assignee": pick.choice([None, "agent-a", "agent-b"]),
        }
        if status in ("processing", "completed", "fake") and pick.random() < 0.8:
            columns["acknowledged_at"] = created + timedelta(seconds=pick.uniform(1, 7200))
        if status == "completed":
            columns["resolved_at"] = created + timedelta(seconds=pick.uniform(60, 40 * 3600))
        rows.append(row(created, number, **columns))
    seed(stats_server, rows)
    return rows


def in_window(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if SINCE <= r["created_at"] < UNTIL]


def durations(rows: list[dict[str, Any]], end: str) -> list[float]:
    return [(r[end] - r["created_at"]).total_seconds()
            for r in rows if r["status"] != "fake" and r.get(end)]  # fmt: skip


def stats(server: Server, **params: Any) -> dict[str, Any]:
    return server.rpc("stats", server.login(), expect=200, **params)["data"]


def test_counts_and_measures_equal_a_computation_by_hand(stats_server, seeded) -> None:
    answer = stats(stats_server, since=SINCE.isoformat(), until=UNTIL.isoformat())
    window = in_window(seeded)
    real = [r for r in window if r["status"] != "fake"]
    assert answer["since"] == SINCE.isoformat() and answer["until"] == UNTIL.isoformat()
    assert answer["group_by"] is None and answer["groups"] == []
    assert answer["total"] == len(window)
    assert answer["fake"] == sum(r["status"] == "fake" for r in window) > 0
    for name in ("status", "source"):
        counted: dict[str, int] = {}
        for r in window if name == "status" else real:
            counted[r[name]] = counted.get(r[name], 0) + 1
        assert answer[f"by_{name}"] == counted
    assert sum(answer["by_severity"].values()) == len(real)
    assert_measure(answer["mtta"], expected_measure(durations(window, "acknowledged_at")))
    assert_measure(answer["mttr"], expected_measure(durations(window, "resolved_at")))


def test_per_day_counts_created_and_resolved_in_utc_days(stats_server, seeded) -> None:
    answer = stats(stats_server, since=SINCE.isoformat(), until=UNTIL.isoformat())
    days = [day["day"] for day in answer["per_day"]]
    assert days[0] == SINCE.date().isoformat() and days[-1] == UNTIL.date().isoformat()
    assert len(days) == len(set(days)) == (UNTIL.date() - SINCE.date()).days + 1
    real = [r for r in in_window(seeded) if r["status"] != "fake"]
    for day in answer["per_day"]:
        created = sum(r["created_at"].date().isoformat() == day["day"] for r in real)
        resolved = sum(
            r.get("resolved_at") is not None and SINCE <= r["resolved_at"] < UNTIL
            and r["resolved_at"].date().isoformat() == day["day"] for r in seeded
        )  # fmt: skip
        assert (day["created"], day["resolved"]) == (created, resolved), day


def test_open_incidents_by_age_and_acknowledgement(stats_server, seeded) -> None:
    answer = stats(stats_server)  # the open ones are those open now, whatever the window
    now = datetime.now(UTC)
    still_open = [r for r in seeded if r["status"] not in ("completed", "fake")]
    assert answer["open"]["total"] == len(still_open)
    assert answer["open"]["unacknowledged"] == sum(not r.get("acknowledged_at") for r in still_open)
    assert sum(answer["open"]["by_severity"].values()) == len(still_open)
    ages = {"under_1h": 0, "1h_24h": 0, "1d_7d": 0, "older": 0}
    for r in still_open:
        ages[age_bucket(now - r["created_at"])] += 1
    assert answer["open_by_age"] == ages


def age_bucket(age: timedelta) -> str:
    for name, limit in (("under_1h", 1 / 24), ("1h_24h", 1), ("1d_7d", 7)):
        if age < timedelta(days=limit):
            return name
    return "older"


@pytest.mark.parametrize("group_by", ["severity", "source", "assignee", "status"])
def test_groups_have_their_own_measures(stats_server, seeded, group_by) -> None:
    answer = stats(stats_server, since=SINCE.isoformat(), until=UNTIL.isoformat(),
                   group_by=group_by)  # fmt: skip
    real = [r for r in in_window(seeded) if r["status"] != "fake"]
    keys = {r.get(group_by) for r in real}
    assert {group["key"] for group in answer["groups"]} == keys
    counts = [group["count"] for group in answer["groups"]]
    assert counts == sorted(counts, reverse=True)
    for group in answer["groups"]:
        members = [r for r in real if r.get(group_by) == group["key"]]
        assert group["count"] == len(members)
        assert_measure(group["mtta"], expected_measure(durations(members, "acknowledged_at")))
        assert_measure(group["mttr"], expected_measure(durations(members, "resolved_at")))


def test_a_reporter_gets_the_figures_of_its_own_incidents(stats_server, seeded) -> None:
    admin = stats_server.login()
    stats_server.rpc("user_create", admin, username="stats-reporter",
                     password="reporter-password", role="reporter")  # fmt: skip
    reporter = stats_server.login("stats-reporter", "reporter-password")
    empty = stats_server.rpc("stats", reporter, expect=200)["data"]
    assert (empty["total"], empty["open"]["total"], empty["mtta"]["count"]) == (0, 0, 0)
    stats_server.rpc("create", reporter, description="mine", expect=201)
    mine = stats_server.rpc("stats", reporter, expect=200)["data"]
    assert (mine["total"], mine["open"]["total"], mine["open"]["unacknowledged"]) == (1, 1, 1)
    assert stats(stats_server)["total"] > mine["total"]


def test_the_default_window_is_the_last_30_days(stats_server, seeded) -> None:
    answer = stats(stats_server)
    until = datetime.fromisoformat(answer["until"])
    assert abs((datetime.now(UTC) - until).total_seconds()) < 60
    assert until - datetime.fromisoformat(answer["since"]) == timedelta(days=30)
    assert len(answer["per_day"]) == 31


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
        ({"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
        ({"group_by": "created_by"}, "group_by"),
        ({"group_by": 1}, "group_by"),
        ({"grup_by": "severity"}, "grup_by"),
    ],
)
def test_bad_parameters_are_named(stats_server, params, field) -> None:
    refused = stats_server.rpc("stats", stats_server.login(), expect=400, **params)
    assert field in refused["data"]["errors"], refused


def test_stats_needs_a_token(stats_server) -> None:
    stats_server.rpc("stats", expect=401)


# -- client.py stats -------------------------------------------------------------------------


def run_client(server: Server, home, *args: str) -> str:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("INCIDENT_RPC_")}  # fmt: skip
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), INCIDENT_RPC_URL=server.url)
    done = subprocess.run(
        [sys.executable, str(ROOT / "client.py"), *args], cwd=ROOT, env=env, text=True,
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr, (done.stdout, done.stderr)
    return done.stdout


def test_client_prints_stats_as_a_table(stats_server, seeded, tmp_path) -> None:
    run_client(stats_server, tmp_path, "login", ADMIN[0], "--password", ADMIN[1])
    window = ("--since", SINCE.isoformat(), "--until", UNTIL.isoformat())
    answer = json.loads(run_client(stats_server, tmp_path, "stats", *window, "--json"))
    assert answer == stats(stats_server, since=SINCE.isoformat(), until=UNTIL.isoformat())
    table = run_client(stats_server, tmp_path, "stats", *window, "--group-by", "severity", "--days")
    lines = table.splitlines()
    assert f"incidents      {answer['total']:,} ({answer['fake']:,} fake" in table
    header = next(line for line in lines if line.split() == ["count", "mean", "p50", "p90", "p99"])
    mtta = lines[lines.index(header) + 1].split()
    assert mtta[:2] == ["MTTA", f"{answer['mtta']['count']:,}"]
    assert sum(line.startswith("severity ") for line in lines) == 4
    per_day = [line.split() for line in lines if line[:4].isdigit() and line[4] == "-"]
    assert [[day["day"], str(day["created"]), str(day["resolved"])]
            for day in answer["per_day"]] == per_day  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (0.4, "0s"), (45, "45s"), (723, "12m 03s"), (11100, "3h 05m"),
     (187200, "2d 04h")],
)  # fmt: skip
def test_client_durations_read_as_a_person_would(seconds, shown) -> None:
    assert client_py.duration(seconds) == shown
