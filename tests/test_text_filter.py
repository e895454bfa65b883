"""`get_all`'s `text` filter: contained in the title or the description, ignoring case,
its own % and _ taken literally, with the other filters and the cursor (both databases)."""

import secrets

import pytest
from support import InProcess


def titles(app: InProcess, token: str, **filters) -> list[str]:
    page = app.rpc("get_all", token, expect=200, **filters)["data"]
    return [incident["title"] for incident in page["incidents"]]


@pytest.fixture(scope="module")
def marker(app: InProcess, app_token: str) -> str:
    """Incidents whose texts carry a marker of this run, with look-alike neighbours."""
    mark = f"zq{secrets.token_hex(4)}"
    for title, description in [
        (f"Disk FULL on {mark.upper()}-db", "the volume is full"),
        ("Payment latency", f"seen on {mark} at 100%_done"),
        (f"{mark} at 100%xdone", "no underscore here"),
        (f"{mark} quiet", "nothing else"),
        ("Unrelated", "nothing of the marker"),
    ]:
        app.rpc("create", app_token, expect=201, title=title, description=description,
                source="monitoring")  # fmt: skip
    app.rpc("update", app_token, expect=200, id=app.rpc(
        "get_all", app_token, text=f"{mark} quiet")["data"]["incidents"][0]["id"],
        status="processing", version=1)  # fmt: skip
    return mark


def test_text_matches_title_or_description_ignoring_case(app, app_token, marker) -> None:
    assert titles(app, app_token, text=marker) == [
        f"{marker} quiet", f"{marker} at 100%xdone", "Payment latency",
        f"Disk FULL on {marker.upper()}-db",
    ]  # fmt: skip
    assert titles(app, app_token, text=marker.upper()) == titles(app, app_token, text=marker)


def test_percent_and_underscore_are_taken_literally(app, app_token, marker) -> None:
    assert titles(app, app_token, text=f"{marker} at 100%_") == ["Payment latency"]
    assert titles(app, app_token, text=f"{marker} at 100%") == [
        f"{marker} at 100%xdone", "Payment latency",
    ]  # fmt: skip
    assert titles(app, app_token, text=f"{marker[:-1]}_") == []  # `_` is no wildcard


def test_text_with_other_filters_and_the_cursor(app, app_token, marker) -> None:
    assert titles(app, app_token, text=marker, status="processing") == [f"{marker} quiet"]
    first = app.rpc("get_all", app_token, expect=200, text=marker, limit=3)["data"]
    assert len(first["incidents"]) == 3 and first["next_cursor"]
    rest = app.rpc("get_all", app_token, expect=200, text=marker, cursor=first["next_cursor"])
    assert [i["title"] for i in rest["data"]["incidents"]] == [f"Disk FULL on {marker.upper()}-db"]


@pytest.mark.parametrize("text", ["", " ", "x" * 201, 7, None, ["a"]])
def test_a_bad_text_is_a_400_naming_it(app: InProcess, app_token: str, text) -> None:
    refused = app.rpc("get_all", app_token, expect=400, text=text)
    assert "text" in refused["data"]["errors"], refused
