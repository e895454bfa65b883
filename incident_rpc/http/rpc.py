"""The /rpc route: one command, a batch of commands, or JSON-RPC 2.0 (contract section 8).

- An object is one command and gets its envelope; with a `jsonrpc` member it is a
  JSON-RPC request (http/jsonrpc.py) and gets a JSON-RPC response. Either goes
  through group commit (dispatch/group_commit.py).
- An array is a batch (dispatch/batch_runner.py runs it): the answers come back in
  order with HTTP 200. JSON-RPC notifications add nothing to the array; a batch
  with nothing to answer is a 204. An empty batch is a 400; more than MAX_BATCH
  elements a 413. Its answers add up to at most MAX_BATCH_ANSWER bytes
  (dispatch/batch.py).
- A batch with a JSON-RPC element answers in JSON-RPC every element that is not a
  native command (an object with an `action`): `{"foo": "boo"}` there is an Invalid
  Request, as in the specification's example (jsonrpc.in_batch).
- Nothing inside an unparseable body, `[]` or `[1]` says which dialect its sender
  speaks: `Content-Type: application/json-rpc` says JSON-RPC for the whole body,
  and an unparseable body that mentions "jsonrpc" gets JSON-RPC's parse error.

JSON-RPC answers are HTTP 200 (204 when there is nothing to answer); only the
refusals that come before any element is read (body or batch too large) are 413.
"""

from typing import Any

from flask import Blueprint, Response, current_app, request

from incident_rpc.dispatch import batch_runner, group_commit
from incident_rpc.dispatch.batch import Batch
from incident_rpc.errors import BadRequest, InvalidJSON, PayloadTooLarge, envelope
from incident_rpc.http import jsonrpc
from incident_rpc.http.responses import POST_ONLY, bearer_token, respond
from incident_rpc.runtime import jsonio
from incident_rpc.telemetry import request_ids

bp = Blueprint("endpoint", __name__)


def _json(body: Any, status: int = 200) -> Response:
    return Response(jsonio.encode(body), status=status, mimetype="application/json")


@bp.route("/rpc", **POST_ONLY)
def rpc_endpoint() -> Response:
    raw = request.get_data(cache=False)
    jsonrpc_only = request.mimetype == "application/json-rpc"
    try:
        body = jsonio.parse(raw)
    except InvalidJSON as error:
        if jsonrpc_only or b'"jsonrpc"' in raw:
            return _json(jsonrpc.parse_error(error))
        raise
    if isinstance(body, list):
        request_ids.note(dialect="jsonrpc" if jsonrpc_only else "native", action="batch")
        return _batch(body, bearer_token(), jsonrpc_only)
    if jsonrpc_only or jsonrpc.speaks_jsonrpc(body):
        request_ids.note(dialect="jsonrpc", action=_named(body, "method"))
        response = jsonrpc.answer(body, bearer_token())
        return Response(status=204) if response is None else _json(response)
    request_ids.note(dialect="native", action=_named(body, "action"))
    return respond(group_commit.submit(body, bearer_token()))


def _named(body: Any, key: str) -> str | None:
    """The action a command names, if it names one (the metrics bound the label)."""
    name = body.get(key) if isinstance(body, dict) else None
    return name if isinstance(name, str) else None


def _batch(items: list[Any], token: str | None, jsonrpc_only: bool) -> Response:
    speaks_jsonrpc = jsonrpc_only or any(map(jsonrpc.speaks_jsonrpc, items))
    if not items:
        if jsonrpc_only:  # the specification's answer to `[]`
            return _json(jsonrpc.error(jsonrpc.INVALID_REQUEST))
        raise BadRequest("a batch needs at least one command")
    limit = current_app.config["MAX_BATCH"]
    if len(items) > limit:
        message = f"a batch holds at most {limit} commands, not {len(items)}"
        if not speaks_jsonrpc:
            raise PayloadTooLarge(message)
        refusal = envelope(False, PayloadTooLarge.status, error=message)
        return _json(jsonrpc.error(jsonrpc.INVALID_REQUEST, data=refusal), PayloadTooLarge.status)
    dialects = jsonrpc.in_batch(items, jsonrpc_only)
    requests = [
        jsonrpc.read(item) if answered_in_jsonrpc else None
        for item, answered_in_jsonrpc in zip(items, dialects, strict=True)
    ]
    commands = [
        item if request is None else request.command
        for request, item in zip(requests, items, strict=True)
    ]
    runs = [request is None or request.command is not None for request in requests]
    batch = Batch(answer_limit=current_app.config["MAX_BATCH_ANSWER"])
    outcomes = batch_runner.run(commands, runs, token, batch)
    answers = [
        outcome if request is None else jsonrpc.respond(request, outcome)
        for request, outcome in zip(requests, outcomes, strict=True)
    ]
    answers = [answer for answer in answers if answer is not None]
    return _json(answers) if answers else Response(status=204)
