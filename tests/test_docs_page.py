"""GET /openrpc.json and GET /docs: the OpenRPC document that `describe` answers,
valid against the OpenRPC meta-schema of the npm package `@open-rpc/meta-schema`
(tests/testdata/openrpc, README there), and the reference page drawn from it in a
real Chromium, with its "try it" forms.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from chromium import Board, launch, tools
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from selenium.webdriver.common.by import By
from support import Server

TESTDATA = Path(__file__).resolve().parent / "testdata" / "openrpc"
META_SCHEMA = TESTDATA / "meta-schema-1.14.9.json"
# The meta-schema's schema objects refer to this one by its URL; read from disk, never fetched.
JSON_SCHEMA_TOOLS = TESTDATA / "json-schema-tools-meta-schema-1.8.0.json"


def validator() -> Draft7Validator:
    referred = Resource(json.loads(JSON_SCHEMA_TOOLS.read_text()), DRAFT7)
    urls = ("https://meta.json-schema.tools", "https://meta.json-schema.tools/")
    registry = Registry().with_resources([(url, referred) for url in urls])
    return Draft7Validator(json.loads(META_SCHEMA.read_text()), registry=registry)


def openrpc(server: Server) -> dict:
    response = requests.get(f"{server.url}/openrpc.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def test_openrpc_json_is_what_describe_answers(server: Server) -> None:
    assert openrpc(server) == server.rpc("describe", expect=200)["data"]


def test_openrpc_json_is_valid_against_the_openrpc_meta_schema(server: Server) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in validator().iter_errors(openrpc(server))]
    assert errors == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.pop("info"),
        lambda d: d.update(openrpc="0.9"),
        lambda d: d["methods"][0].pop("name"),
        lambda d: d["methods"][0]["params"][0].update(schema={"type": "text"}),
        lambda d: d["methods"][0].update(result={"schema": {}}),
    ],
    ids=["no info", "unknown version", "method without name", "bad schema type", "no result name"],
)
def test_the_meta_schema_catches_a_broken_document(server: Server, breakage) -> None:
    document = openrpc(server)
    breakage(document)
    assert list(validator().iter_errors(document))


@pytest.fixture
def page(server: Server) -> Iterator[Board]:
    tools()
    board = Board(launch(), server.url)
    yield board
    board.driver.quit()


def test_the_docs_page_lists_every_action_with_roles_params_and_examples(
    page: Board, server: Server
) -> None:
    document = openrpc(server)
    page.open("/docs")
    page.wait(lambda: page.all("section.method"))
    sections = {s.get_attribute("id"): s for s in page.all("section.method")}
    assert sorted(sections) == sorted(m["name"] for m in document["methods"])
    create = sections["create"].text
    assert "any signed-in user" in create and "description" in create
    assert "1..10000 characters" in create and "one of: low, medium, high, critical" in create
    assert '"action": "create"' in create
    assert "admins" in sections["user_create"].text
    assert "no token needed" in sections["describe"].text
    toc = [a.text for a in page.all("#toc a")]
    assert toc == [m["name"] for m in document["methods"]]


def test_try_it_posts_to_rpc_with_the_token_signed_in_on_the_board(
    page: Board, server: Server
) -> None:
    page.open("/docs")
    page.wait(lambda: page.all("#describe form.try"))
    page.find("#describe form.try button").click()
    page.wait(lambda: '"success": true' in page.text("#describe .answer"))
    page.find("#whoami form.try button").click()  # not signed in: refused
    page.wait(lambda: "HTTP 401" in page.text("#whoami .answer"))
    page.open("/").sign_in().signed_in()
    page.find('a[href="/docs"]').click()  # the same tab keeps the board's token
    page.wait(lambda: page.all("#whoami form.try"))
    page.find("#whoami form.try button").click()
    page.wait(lambda: '"username": "admin"' in page.text("#whoami .answer"))
    params = page.find("#get form.try textarea")
    params.clear()
    params.send_keys('{"id": 999999999}')
    page.find("#get form.try button").click()
    page.wait(lambda: "HTTP 404" in page.text("#get .answer"))
    page.find("#comments form.try textarea").clear()
    page.find("#comments form.try textarea").send_keys("not json")
    page.find("#comments form.try button").click()
    page.wait(lambda: "not a JSON object" in page.text("#comments .answer"))
    assert page.driver.find_elements(By.CSS_SELECTOR, ".method img") == []
