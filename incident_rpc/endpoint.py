"""The /rpc route: one command, a batch of commands, or JSON-RPC 2.0 (contract section 8).

- An object is one command and gets its envelope; with a `jsonrpc` member it is a
  JSON-RPC request (jsonrpc.py) and gets a JSON-RPC response.
- An array is a batch: every element runs on its own through `rpc.execute`, and
  the answers come back in order with HTTP 200. JSON-RPC notifications add
  nothing to the array; a batch with nothing to answer is a 204. An empty batch
  is a 400; more than MAX_BATCH elements a 413.
- Each element runs in its own savepoint of one transaction that commits once, at
  the end: an element that fails is rolled back alone, and a batch of 1,000 pays
  for one durable commit instead of 1,000. When the shared transaction meets a
  server-side failure (the database lost, a deadlock) or cannot commit, nothing
  of it is kept and the batch runs again with one transaction per element, so
  the answers always describe what is stored.
- Nothing inside an unparseable body, `[]` or `[1]` says which dialect its sender
  speaks: `Content-Type: application/json-rpc` says JSON-RPC for the whole body,
  and an unparseable body that mentions "jsonrpc" gets JSON-RPC's parse error.

JSON-RPC answers are HTTP 200 (204 when there is nothing to answer); only the
refusals that come before any element is read (body or batch too large) are 413.
"""

import json
from typing import Any

from flask import Blueprint, Response, current_app, request

from . import jsonrpc
from .errors import BadRequest, InvalidJSON, PayloadTooLarge, envelope
from .extensions import db
from .rpc import POST_ONLY, Batch, bearer_token, execute, parse_json, respond

bp = Blueprint("endpoint", __name__)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


@bp.route("/rpc", **POST_ONLY)
def rpc_endpoint() -> Response:
    raw = request.get_data(cache=False)
    jsonrpc_only = request.mimetype == "application/json-rpc"
    try:
        body = parse_json(raw)
    except InvalidJSON:
        if jsonrpc_only or b'"jsonrpc"' in raw:
            return _json(jsonrpc.error(jsonrpc.PARSE_ERROR))
        raise
    if isinstance(body, list):
        return _batch(body, bearer_token(), jsonrpc_only)
    if jsonrpc_only or jsonrpc.speaks_jsonrpc(body):
        response = jsonrpc.answer(body, bearer_token())
        return Response(status=204) if response is None else _json(response)
    return respond(execute(body, None, bearer_token()))


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
    together = Batch(savepoints=True)
    answers = _run_all(items, token, jsonrpc_only, together)
    if answers is None:
        answers = _run_all(items, token, jsonrpc_only, Batch(callers=together.callers))
    return _json(answers) if answers else Response(status=204)


def _run_all(items: list[Any], token: str | None, jsonrpc_only: bool, batch: Batch):
    """The answers, in order; None when the shared transaction had to be given up."""
    answers = []
    for item in items:
        if jsonrpc_only or jsonrpc.speaks_jsonrpc(item):
            response = jsonrpc.answer(item, token, batch)
            if response is not None:
                answers.append(response)
        else:
            answers.append(execute(item, None, token, batch))
        if batch.savepoints and batch.broken:
            db.session.rollback()
            return None
    if batch.savepoints:
        try:
            db.session.commit()
        except Exception:
            db.session.rollback()
            return None
    return answers
