"""Logs: request ids from header to answer to every line, JSON lines, and no secrets.

Real gunicorn servers with their stderr and stdout captured, read as an operator
(or a log shipper) would read them.
"""

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from support import ADMIN, Server

SECRET_KEY = f"log-test-secret-key-{secrets.token_hex(16)}"
REQUIRED = {"time", "level", "logger", "message", "request_id", "action", "status",
            "duration", "actor"}  # fmt: skip


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Iterator[tuple[Server, Path]]:
    """A server at DEBUG, JSON lines, both access logs on: as talkative as it gets."""
    folder = tmp_path_factory.mktemp("logged")
    server = Server(f"sqlite:///{folder / 'db.sqlite3'}", folder / "i", LOG_LEVEL="DEBUG",
                    LOG_FORMAT="json", ACCESS_LOG="1", GUNICORN_ACCESS_LOG="-",
                    SECRET_KEY=SECRET_KEY)  # fmt: skip
    server.start(output=folder / "out")
    yield server, folder / "out"
    server.stop_soon()


def lines(output: Path) -> list[dict[str, Any]]:
    """Every line the server wrote, each parsed (a line that is not JSON fails)."""
    text = (output / "stderr").read_text() + (output / "stdout").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_for_line(output: Path, **fields: Any) -> dict[str, Any]:
    for _ in range(100):
        found = [line for line in lines(output) if fields.items() <= line.items()]
        if found:
            return found[-1]
        time.sleep(0.05)  # the access line follows the answer by a moment
    pytest.fail(f"no log line with {fields}")


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("req-123_abc.def:9", True), ("a" * 64, True), ("a" * 65, False), ("two words", False),
     ("line\tbreak", False), ("", False), (None, False)],
)  # fmt: skip
def test_a_sane_request_id_is_kept_and_any_other_replaced(logged, sent, kept) -> None:
    server, _ = logged
    headers = {} if sent is None else {"X-Request-Id": sent}
    answer = requests.post(f"{server.url}/rpc", json={"action": "describe"}, headers=headers,
                           timeout=10)  # fmt: skip
    echoed = answer.headers["X-Request-Id"]
    if kept:
        assert echoed == sent
    else:
        assert echoed != sent and len(echoed) == 32 and int(echoed, 16) >= 0


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/no/such/route"), ("GET", "/rpc"), ("GET", "/readyz"),
                         ("POST", "/incidents/get_all/")]
)  # fmt: skip
def test_every_answer_has_a_request_id(logged, method, path) -> None:
    server, _ = logged
    answer = requests.request(method, f"{server.url}{path}", timeout=10)
    assert len(answer.headers["X-Request-Id"]) == 32


def test_json_lines_carry_the_request_and_its_caller(logged) -> None:
    server, output = logged
    token = server.login()
    created = requests.post(
        f"{server.url}/rpc", json={"action": "create", "token": token, "description": "disk"},
        headers={"X-Request-Id": "trace-create-1"}, timeout=10,
    )  # fmt: skip
    assert created.status_code == 201
    line = wait_for_line(output, logger="incident_rpc.access", request_id="trace-create-1")
    assert REQUIRED <= set(line), line
    assert (line["action"], line["status"], line["actor"]) == ("create", 201, ADMIN[0])
    assert 0 < line["duration"] < 10 and line["level"] == "INFO"
    gunicorn_line = wait_for_line(output, logger="gunicorn.access", request_id="trace-create-1")
    assert REQUIRED <= set(gunicorn_line) and gunicorn_line["status"] == 201


def test_start_up_messages_are_json_too(logged) -> None:
    _, output = logged
    by_message = {line["message"]: line for line in lines(output)}
    first_admin = by_message[f"created the first administrator, {ADMIN[0]}"]
    assert (first_admin["level"], first_admin["logger"]) == ("INFO", "incident_rpc")
    assert first_admin["request_id"] is None  # not about any request
    assert any(message.startswith("Booting worker") for message in by_message)
    assert "database schema up to date (migrations run at start-up)" in by_message


def test_no_secret_reaches_any_log(logged) -> None:
    """Each kind of secret goes in the ways a caller sends it; none comes out."""
    server, output = logged
    admin = server.login()
    password = f"pw-{secrets.token_hex(8)}"
    server.rpc("user_create", admin, username="log-agent", password=password, role="agent",
               expect=201)  # fmt: skip
    agent = server.login("log-agent", password)
    server.rpc("authorization", username="log-agent", password=f"wrong-{password}", expect=401)
    key = server.rpc("key_create", admin, name="log-key", role="reporter", expect=201)
    api_key = key["data"]["key"]
    body_text = f"body-{secrets.token_hex(8)}"
    server.rpc("create", api_key, description=body_text, expect=201)
    server.post("/rpc", {"action": "get_all"}, headers={"Authorization": f"Bearer {agent}"})
    server.post("/incidents/get_all/", {"token": agent})
    server.rpc("password_change", agent, old_password=password,
               new_password=f"new-{password}")  # fmt: skip
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?token={admin}", timeout=10)
    ws.close()
    marker = wait_for_line(output, logger="incident_rpc.access", action="password_change")
    assert marker["actor"] == "log-agent"
    written = (output / "stderr").read_text() + (output / "stdout").read_text()
    for secret in (password, admin, agent, api_key, SECRET_KEY, ADMIN[1], body_text):
        assert secret not in written, secret
    assert f"new-{password}" not in written


def test_an_unknown_log_format_stops_the_server(tmp_path) -> None:
    server = Server(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "i", LOG_FORMAT="xml")
    with pytest.raises(RuntimeError, match="exited"):
        server.start(output=tmp_path / "out")
    assert (
        "LOG_FORMAT must be one of text, json, not 'xml'" in (tmp_path / "out/stderr").read_text()
    )
