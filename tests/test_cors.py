"""CORS_ORIGINS (board/cors.py): off by default; when set, pages on those origins may
call /rpc and /openrpc.json, and no others; no other route ever answers with CORS
headers. A table of requests through the test client, then a real Chromium on a
real server, where `http://localhost:PORT` and `http://127.0.0.1:PORT` are two
origins of the same server.
"""

from collections.abc import Iterator

import pytest
from chromium import Board, launch, tools
from support import Server

ALLOWED = "http://board.test:8080"
OTHER = "http://elsewhere.test"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    from incident_rpc import create_app

    def client(origins: str | None):
        folder = tmp_path_factory.mktemp("cors")
        app = create_app({
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'db.sqlite3'}",
            "SECRET_KEY": "test-secret-key-for-cors", "CORS_ORIGINS": origins,
        })  # fmt: skip
        return app.test_client()

    return {"off": client(None), "on": client(f"{ALLOWED}, http://second.test/")}


@pytest.mark.parametrize(
    "setting, method, path, origin, headers, allowed",
    [
        ("off", "OPTIONS", "/rpc", ALLOWED, PREFLIGHT, False),
        ("off", "POST", "/rpc", ALLOWED, {}, False),
        ("off", "GET", "/openrpc.json", ALLOWED, {}, False),
        ("on", "OPTIONS", "/rpc", ALLOWED, PREFLIGHT, True),
        ("on", "OPTIONS", "/rpc/", "http://second.test", PREFLIGHT, True),
        ("on", "POST", "/rpc", ALLOWED, {}, True),
        ("on", "GET", "/openrpc.json", ALLOWED, {}, True),
        ("on", "OPTIONS", "/rpc", OTHER, PREFLIGHT, False),
        ("on", "POST", "/rpc", OTHER, {}, False),
        ("on", "GET", "/openrpc.json", OTHER, {}, False),
        ("on", "POST", "/incidents/get_all/", ALLOWED, {}, False),
        ("on", "GET", "/healthz", ALLOWED, {}, False),
        ("on", "GET", "/", ALLOWED, {}, False),
    ],
)
def test_which_requests_get_cors_headers(clients, setting, method, path, origin, headers, allowed):
    client = clients[setting]
    body = {"json": {"action": "describe"}} if method == "POST" else {}
    response = client.open(path, method=method, headers={"Origin": origin, **headers}, **body)
    response.close()  # a file's answer (GET /) holds the file open until then
    assert (response.headers.get("Access-Control-Allow-Origin") == origin) is allowed
    assert "Access-Control-Allow-Credentials" not in response.headers
    if allowed and method == "OPTIONS":
        assert response.status_code == 204
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "content-type" in response.headers["Access-Control-Allow-Headers"].lower()
    if method == "OPTIONS" and not allowed:
        assert response.status_code == 405  # the command routes take POST only


def test_an_answer_is_the_same_with_and_without_an_origin(clients) -> None:
    plain = clients["on"].post("/rpc", json={"action": "describe"})
    crossed = clients["on"].post("/rpc", json={"action": "describe"}, headers={"Origin": ALLOWED})
    assert plain.status_code == crossed.status_code == 200
    assert plain.get_json() == crossed.get_json()


@pytest.fixture(scope="module")
def cors_server(new_database_url, tmp_path_factory) -> Iterator[Server]:
    running = Server(new_database_url(), tmp_path_factory.mktemp("cors-server"))
    running.env["CORS_ORIGINS"] = f"http://localhost:{running.port}"
    running.start()
    yield running
    running.stop_soon()


FETCH = """
const [url, body, done] = arguments;
fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body})
  .then(r => r.json()).then(e => done("ok " + e.status), error => done("refused " + error));
"""


def test_a_browser_on_an_allowed_origin_may_call_rpc_and_others_may_not(cors_server):
    tools()
    browser = Board(launch(), cors_server.url)
    try:
        token = cors_server.login()
        body = f'{{"action": "whoami", "token": "{token}"}}'
        other_host = f"http://localhost:{cors_server.port}"
        browser.driver.get(f"{other_host}/healthz")  # a page on the allowed origin
        answer = browser.driver.execute_async_script(FETCH, f"{cors_server.url}/rpc", body)
        assert answer == "ok 200"  # a JSON body: the preflight was answered too
        browser.driver.get(f"{cors_server.url}/healthz")  # 127.0.0.1: not in CORS_ORIGINS
        answer = browser.driver.execute_async_script(FETCH, f"{other_host}/rpc", body)
        assert answer.startswith("refused")
    finally:
        browser.driver.quit()
