"""JSON-RPC 2.0 (https://www.jsonrpc.org/specification) spoken on top of our commands.

A request becomes a command (`method` is the action, `params` its parameters,
the token in them or in the Authorization header), runs through `dispatcher.execute`
like any other, and its envelope becomes the response: `result` is the
envelope's `data`; a failure becomes an error object with the envelope in
`data`. Errors found before a command exists (not a request, unknown method)
follow the specification's own examples, without `data`. Parameters may also
be given by position, in the order that `rpc.discover` lists them.
"""

from dataclasses import dataclass
from functools import cache
from typing import Any

from incident_rpc.dispatch import group_commit, openrpc
from incident_rpc.dispatch.registry import ACTIONS, lookup
from incident_rpc.errors import InvalidJSON, RpcError, envelope, to_envelope

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # any other failure status
MESSAGES = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal error",
}
# Envelope status -> error code; the server range (-32000..-32099) for our own failures.
CODES = {
    400: INVALID_PARAMS,
    401: -32001,  # authentication: missing, bad, expired or revoked token
    403: -32003,  # permission: the role does not allow the action
    404: -32004,  # no such incident (or other object)
    409: -32009,  # conflict: stale version, already resolved, ...
    413: -32013,  # too large
    429: -32029,  # rate limited; data.data.retry_after
    500: INTERNAL_ERROR,
    503: -32050,  # the database is unavailable; retry
}
ALIASES = {"rpc.discover": "describe"}  # OpenRPC's discovery method
_MEMBERS = {"jsonrpc", "method", "params", "id"}


def speaks_jsonrpc(item: Any) -> bool:
    """A batch element or body in this dialect: an object with a `jsonrpc` member."""
    return isinstance(item, dict) and "jsonrpc" in item


def in_batch(items: list[Any], whole_body: bool) -> list[bool]:
    """Which elements of a batch are answered in JSON-RPC.

    All of them when the Content-Type says JSON-RPC (`whole_body`); none in a batch
    without a JSON-RPC request, which stays native. In a batch with one, every element
    but a native command (an object with an `action` and no `jsonrpc`): its sender
    speaks JSON-RPC, so `{"foo": "boo"}` or `1` is an Invalid Request to it, as in the
    specification's own batch example, not a native 400.
    """
    if whole_body or not any(map(speaks_jsonrpc, items)):
        return [whole_body] * len(items)
    return [speaks_jsonrpc(item) or not _native(item) for item in items]


def _native(item: Any) -> bool:
    return isinstance(item, dict) and "action" in item


def error(code: int, request_id: Any = None, data: Any = None, message: str = "") -> dict:
    body: dict[str, Any] = {"code": code, "message": message or MESSAGES.get(code, "Server error")}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "error": body, "id": request_id}


def parse_error(refusal: RpcError) -> dict:
    """The specification's parse error; with our envelope in `data` when it says more
    than that (a rule of jsonio.parse that valid JSON broke, e.g. a repeated key)."""
    said_more = refusal.message != InvalidJSON.message
    return error(PARSE_ERROR, data=to_envelope(refusal) if said_more else None)


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def _well_formed(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and item.get("jsonrpc") == "2.0"
        and isinstance(item.get("method"), str)
        and isinstance(item.get("params", {}), dict | list)
        and _valid_id(item.get("id"))
        and set(item) <= _MEMBERS
    )


@dataclass(frozen=True)
class Request:
    """A request read: the command it asks for, or the error that answers it at once."""

    command: dict[str, Any] | None
    early: dict[str, Any] | None  # the response when there is no command to run
    id: Any
    notification: bool


def read(item: Any) -> Request:
    """Translate a request into our command (or into the error it deserves)."""
    if not _well_formed(item):
        known_id = item.get("id") if isinstance(item, dict) and _valid_id(item.get("id")) else None
        return Request(None, error(INVALID_REQUEST), known_id, notification=False)
    request_id, notification = item.get("id"), "id" not in item
    command, early = _command(item["method"], item.get("params", {}))
    return Request(command, early, request_id, notification)


def respond(request: Request, outcome: dict[str, Any] | None) -> dict[str, Any] | None:
    """The response to a request given its command's envelope; None for a notification."""
    if request.notification:  # it ran (or could not), and nobody hears about it
        return None
    if outcome is None:
        response = dict(request.early or {})
    elif outcome["success"]:
        response = {"jsonrpc": "2.0", "result": outcome["data"]}
    else:
        code = CODES.get(outcome["status"], SERVER_ERROR)
        response = error(code, data=outcome, message=MESSAGES.get(code) or outcome["error"])
    response["id"] = request.id
    return response


def answer(item: Any, header_token: str | None):
    """Run one request (grouped like any other: dispatch/group_commit.py); its response
    object, or None for a notification."""
    request = read(item)
    outcome = None
    if request.command is not None:
        outcome = group_commit.submit(request.command, header_token)
    return respond(request, outcome)


def _command(method: str, params: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    name = ALIASES.get(method, method)
    if (method.startswith("rpc.") and method not in ALIASES) or lookup(name) is None:
        return None, error(METHOD_NOT_FOUND)
    if isinstance(params, list):
        names = _positions(name)
        if len(params) > len(names):
            reason = f"{name} takes at most {len(names)} parameters by position"
            return None, error(INVALID_PARAMS, data=envelope(False, 400, error=reason))
        params = dict(zip(names, params, strict=False))
    if "action" in params:
        data = {"errors": {"action": ["Unknown field."]}}
        refusal = envelope(False, 400, data, "invalid parameters: action")
        return None, error(INVALID_PARAMS, data=refusal)
    return {**params, "action": name}, None


@cache
def _positions(name: str) -> list[str]:
    """The parameter names of an action in their by-position order."""
    return [param["name"] for param in openrpc.method(ACTIONS[name])["params"]]
