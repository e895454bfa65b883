"""The OpenRPC document (https://spec.open-rpc.org) of every registered action.

Built from `rpc.ACTIONS` and the very marshmallow schemas the dispatcher
validates with and dumps through, so the description cannot drift from what the
server accepts and answers. `describe` and JSON-RPC's `rpc.discover` serve it.
"""

import inspect
from typing import Any

from marshmallow import Schema, fields, validate

from incident_rpc.dispatch.registry import ACTIONS, Action, lookup
from incident_rpc.schemas import fields as ours
from incident_rpc.schemas.incidents import OneOrMany

OPENRPC_VERSION = "1.2.6"
_TOKEN = {"type": "string", "description": "bearer token; or the Authorization header"}
_REQUEST_ID = {
    "type": "string", "minLength": 1, "maxLength": 255,
    "description": "retrying with the same id within 24 hours returns the first answer",
}  # fmt: skip
ERRORS = [
    {"code": -32700, "message": "Parse error"},
    {"code": -32600, "message": "Invalid Request"},
    {"code": -32601, "message": "Method not found"},
    {"code": -32602, "message": "Invalid params", "data": "the envelope, status 400"},
    {"code": -32603, "message": "Internal error", "data": "the envelope, status 500"},
    {"code": -32001, "message": "authentication failed", "data": "the envelope, status 401"},
    {"code": -32003, "message": "role does not allow", "data": "the envelope, status 403"},
    {"code": -32004, "message": "not found", "data": "the envelope, status 404"},
    {"code": -32009, "message": "conflict", "data": "the envelope, status 409"},
    {"code": -32013, "message": "too large", "data": "the envelope, status 413"},
    {"code": -32029, "message": "too many requests", "data": "the envelope, status 429"},
    {"code": -32050, "message": "database unavailable", "data": "the envelope, status 503"},
]


def document() -> dict[str, Any]:
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {"title": "incident_rpc", "version": "1"},
        "methods": [method(spec) for name, spec in sorted(ACTIONS.items()) if lookup(name)],
        "components": {"errors": {str(e["code"]): e for e in ERRORS}},
    }


def method(spec: Action) -> dict[str, Any]:
    doc = inspect.getdoc(spec.handler) or spec.name
    params = [
        {
            "name": field.data_key or name,
            "required": field.required,
            "schema": field_schema(field, True),
        }
        for name, field in spec.params.load_fields.items()
    ]
    if spec.role is not None:
        params.append({"name": "token", "required": False, "schema": _TOKEN})
    if spec.changes:
        params.append({"name": "request_id", "required": False, "schema": _REQUEST_ID})
    output = schema_of(spec.output, loading=False) if spec.output is not None else {}
    return {
        "name": spec.name,
        "summary": doc.splitlines()[0],
        "description": doc,
        "paramStructure": "either",  # by position: in the order of this list
        "params": params,
        "result": {"name": f"{spec.name}_result", "schema": output},
        "x-role": spec.role,
        "x-changes": spec.changes,
        "x-monitor": spec.monitor,  # a monitor key may call it, on what it raised
    }


def schema_of(schema: Schema, loading: bool) -> dict[str, Any]:
    """A JSON Schema object for a marshmallow schema: what it loads, or what it dumps."""
    members = schema.load_fields if loading else schema.dump_fields
    properties = {(f.data_key or name): field_schema(f, loading) for name, f in members.items()}
    result: dict[str, Any] = {"type": "object", "properties": properties}
    required = sorted(f.data_key or name for name, f in members.items() if f.required)
    if required and loading:
        result["required"] = required
    if loading:
        result["additionalProperties"] = False
    return result


def field_schema(field: fields.Field, loading: bool) -> dict[str, Any]:
    """A JSON Schema for one field, with the limits its validators enforce."""
    schema = _base(field, loading)
    for validator in field.validators:
        if isinstance(validator, validate.Range):
            schema.update(_bounds(validator, "minimum", "maximum"))
        elif isinstance(validator, validate.Length):
            which = ("minItems", "maxItems") if schema.get("type") == "array" else None
            schema.update(_bounds(validator, *(which or ("minLength", "maxLength"))))
        elif isinstance(validator, validate.OneOf):
            schema["enum"] = list(validator.choices)
    if isinstance(field, ours.Text) and not field.blank:
        schema.setdefault("minLength", 1)
    if field.allow_none and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


def _bounds(validator: Any, low: str, high: str) -> dict[str, Any]:
    bounds = {low: validator.min, high: validator.max}
    return {key: value for key, value in bounds.items() if value is not None}


def _base(field: fields.Field, loading: bool) -> dict[str, Any]:
    if isinstance(field, fields.Nested):
        nested = schema_of(field.schema, loading)
        return {"type": "array", "items": nested} if field.many else nested
    if isinstance(field, fields.List):
        return {"type": "array", "items": field_schema(field.inner, loading)}
    if isinstance(field, OneOrMany):  # a value or a list of them
        one = field_schema(field.one, loading)
        return {"oneOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": 10}]}
    if isinstance(field, ours.Timestamp):
        return {"type": "string", "format": "date-time"}
    for kind, name in _SIMPLE:
        if isinstance(field, kind):
            return {"type": name}
    return {}  # anything (e.g. an opaque cursor is a string, but say no more)


_SIMPLE = [
    (fields.Boolean, "boolean"),
    (fields.Integer, "integer"),
    (fields.Number, "number"),
    (fields.String, "string"),
    (fields.Dict, "object"),
    (ours.Cursor, "string"),
]
