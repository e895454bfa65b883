"""The fast output schemas (`FlatOut`) dump exactly what plain marshmallow dumps, and
answers are encoded (jsonio.encode) as the standard library would encode them."""

import json
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from marshmallow import Schema
from sqlalchemy import create_engine, select

from incident_rpc.models import Incident, Severity, Status
from incident_rpc.runtime import jsonio
from incident_rpc.schemas import legacy
from incident_rpc.schemas.incidents import FlatOut, IncidentOut, incident_page_out

NOW = datetime(2026, 5, 17, 18, 30, 0, 123456, tzinfo=UTC)


def incidents() -> list[Any]:
    full = Incident(
        id=7, title="Server down", description="Scooter 875643 offline", status="processing",
        severity="critical", source="monitoring", details={"scooter": 875643, "tags": ["a"]},
        created_by="admin", created_at=NOW, updated_at=NOW + timedelta(seconds=5),
        resolved_at=NOW.astimezone(timezone(timedelta(hours=3))), resolved_by="agent",
        resolution="rebooted", version=3,
    )  # fmt: skip
    bare = Incident(
        id=2**63 - 1, title=None, description="x", status=Status.new, severity=Severity.medium,
        source="unknown", details=None, created_by="bench", created_at=NOW, updated_at=NOW,
        resolved_at=None, resolved_by=None, resolution=None, version=1,
    )  # fmt: skip
    row = SimpleNamespace(**{name: getattr(full, name) for name in IncidentOut().fields})
    return [full, bare, row, *database_rows(full, bare)]


def database_rows(*objects: Incident) -> list[dict[str, Any]]:
    """The same incidents as `create` and `get_all` read them: dicts of a row's columns."""
    engine = create_engine("sqlite://")
    table = Incident.__table__
    table.create(engine)
    with engine.begin() as connection:
        for obj in objects:
            values = {c.key: getattr(obj, c.key) for c in table.columns}  # None: the default
            values = {key: value for key, value in values.items() if value is not None}
            connection.execute(table.insert().values(values))
        rows = connection.execute(select(*table.c).order_by(table.c.id.desc())).mappings().all()
    engine.dispose()
    return [dict(row) for row in rows]


def plain(schema: type[FlatOut]) -> Schema:
    """The same declared fields on an ordinary marshmallow schema."""
    return type("Plain" + schema.__name__, (Schema,), dict(schema._declared_fields))()


@pytest.mark.parametrize("schema", [IncidentOut, legacy.IncidentOut])
def test_dumps_like_marshmallow(schema: type[FlatOut]) -> None:
    objects = incidents()
    for obj in objects:
        assert schema().dump(obj) == plain(schema).dump(obj)
    assert schema().dump(objects, many=True) == plain(schema).dump(objects, many=True)
    assert schema(many=True).dump(objects) == plain(schema).dump(objects, many=True)


def test_pages_encode_to_what_marshmallow_and_json_would_write() -> None:
    """A page leaves UTC times to the encoder (times_as_is) and passes on documents
    read as text (details): the JSON written is the same."""
    objects = incidents()
    rows = [row for row in objects if isinstance(row, dict)]
    as_text = [{**row, "details": json.dumps(row["details"])} for row in rows]
    page = incident_page_out.dump({"incidents": objects + as_text, "next_cursor": (NOW, 7)})
    expected = plain(IncidentOut).dump(objects + rows, many=True)
    assert json.loads(jsonio.encode(page))["incidents"] == json.loads(json.dumps(expected))
    assert isinstance(page["next_cursor"], str)


@pytest.mark.parametrize("microsecond", [0, 1, 120000, 999999])
def test_the_encoder_writes_utc_times_as_isoformat_does(microsecond: int) -> None:
    for moment in (NOW, datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)):
        moment = moment.replace(microsecond=microsecond)
        assert jsonio.encode([moment]) == json.dumps([moment.isoformat()]).encode()


@pytest.mark.parametrize(
    "body",
    [
        {"jsonrpc": "2.0", "result": {}, "id": 2**70},  # an echoed id past 64 bits
        {"data": {"errors": {"ids": {0: ["Not a valid integer."]}}}},  # marshmallow's int keys
        {"error": "no such user '\ud800'"},  # a lone surrogate that json.loads let in
        {"incidents": [{"title": "Überschwemmung ☔", "details": {"n": -(2**63)}}]},
    ],
)
def test_answers_encode_whatever_the_standard_library_would(body: dict[str, Any]) -> None:
    assert json.loads(jsonio.encode(body)) == json.loads(json.dumps(body))
