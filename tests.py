"""End-to-end tests: a real gunicorn on SQLite and PostgreSQL, driven over HTTP."""

from conftest import Server


def test_create_then_read_back(server: Server, token: str) -> None:
    created = server.rpc("create", token, expect=201, description="Scooter 875643 offline")
    incident = created["data"]
    assert incident["status"] == "new" and incident["version"] == 1
    got = server.rpc("get", token, expect=200, id=incident["id"])
    assert got["data"] == incident
