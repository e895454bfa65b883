"""The legacy list streams every incident, past the first chunk, on both databases."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from support import Server

ROWS = 4500  # more than two of the stream's 2000-row chunks


@pytest.fixture(scope="module")
def crowded(new_database_url, tmp_path_factory) -> Iterator[Server]:
    """A server whose database holds ROWS incidents, inserted straight into the table."""
    running = Server(new_database_url(), tmp_path_factory.mktemp("instance")).start()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {
            "description": f"incident {n}",
            "status": ("new", "fake")[n % 2],
            "at": start + timedelta(seconds=n),
        }
        for n in range(ROWS)
    ]
    engine = create_engine(running.database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO incidents (description, status, severity, source, created_by,"
                " created_at, updated_at, version)"
                " VALUES (:description, :status, 'medium', 'partner', 'test', :at, :at, 1)"
            ),
            rows,
        )
    engine.dispose()
    yield running
    running.stop_soon()


def test_streams_every_incident_oldest_first(crowded: Server) -> None:
    token = crowded.login()
    response = crowded.post("/incidents/get_all/", {"token": token})
    assert response.status_code == 200
    incidents = response.json()["data"]["incidents"]
    assert [item["incident"] for item in incidents] == [f"incident {n}" for n in range(ROWS)]


def test_streams_a_filtered_list_and_serves_on(crowded: Server) -> None:
    token = crowded.login()
    response = crowded.post("/incidents/get_all/", {"token": token, "status": "fake"})
    assert response.status_code == 200
    assert len(response.json()["data"]["incidents"]) == ROWS // 2
    crowded.rpc("create", token, expect=201, description="written after the stream")
