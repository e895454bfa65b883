"""The /rpc route: one command, a batch of commands, or JSON-RPC 2.0 (contract section 8).

- An object is one command and gets its envelope; with a `jsonrpc` member it is a
  JSON-RPC request (http/jsonrpc.py) and gets a JSON-RPC response.
- An array is a batch: every element runs on its own through `dispatcher.execute`, and
  the answers come back in order with HTTP 200. JSON-RPC notifications add
  nothing to the array; a batch with nothing to answer is a 204. An empty batch
  is a 400; more than MAX_BATCH elements a 413. Its answers add up to at most
  MAX_BATCH_ANSWER bytes: the command that would pass it is undone, and it and
  every later one answer 413 (dispatcher.Batch.spend).
- The batch runs in one database transaction, committed once at the end, and the
  session joins it so that each command's own commit or rollback (the
  dispatcher's, or a handler's) only releases or rolls back a savepoint: an
  element that fails is undone alone, and a batch of 1,000 pays for one durable
  commit instead of 1,000. If that commit fails (the database went away), nothing
  of the batch is kept and it runs again with one transaction per element, so
  the answers always describe what is stored.
- Except for slow commands (`dispatcher.runs_alone`: sign-ins and whatever else checks or
  hashes a password, about 80 ms each): each runs on its own, outside the shared
  transaction, which commits before it and starts again after it. Kept inside, 60
  sign-ins held the transaction open for 9 s, and with it every other client's
  events (they are delivered in the order of the writing transactions, events/journal.py)
  and, on SQLite, every writer.
- A batch with a JSON-RPC element answers in JSON-RPC every element that is not a
  native command (an object with an `action`): `{"foo": "boo"}` there is an Invalid
  Request, as in the specification's example (jsonrpc.in_batch).
- Nothing inside an unparseable body, `[]` or `[1]` says which dialect its sender
  speaks: `Content-Type: application/json-rpc` says JSON-RPC for the whole body,
  and an unparseable body that mentions "jsonrpc" gets JSON-RPC's parse error.

JSON-RPC answers are HTTP 200 (204 when there is nothing to answer); only the
refusals that come before any element is read (body or batch too large) are 413.
"""

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, request
from sqlalchemy import Connection

from incident_rpc.dispatch import dispatcher, group_commit, transaction
from incident_rpc.dispatch.batch import Batch
from incident_rpc.dispatch.dispatcher import execute
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
    outcomes: list[Any] = []
    for start, end, alone in _stretches(commands):
        stretch = commands[start:end], runs[start:end]
        outcomes += _run_stretch(*stretch, token, batch, shared=not alone)
    answers = [
        outcome if request is None else jsonrpc.respond(request, outcome)
        for request, outcome in zip(requests, outcomes, strict=True)
    ]
    answers = [answer for answer in answers if answer is not None]
    return _json(answers) if answers else Response(status=204)


def _stretches(commands: list[Any]) -> Iterator[tuple[int, int, bool]]:
    """(start, end, alone) of the stretches of a batch: each command that runs alone
    (`dispatcher.runs_alone`: it checks or hashes a password) is a stretch of its own, and
    the commands between such ones share one transaction."""
    start = 0
    for n, command in enumerate(commands):
        if dispatcher.runs_alone(command):
            if start < n:
                yield start, n, False
            yield n, n + 1, True
            start = n + 1
    if start < len(commands):
        yield start, len(commands), False


def _run_stretch(
    commands: list[Any], runs: list[bool], token: str | None, batch: Batch, shared: bool
) -> list[Any]:
    """The outcomes of a stretch: in one shared transaction, or one transaction each."""
    if shared:
        answered = batch.answered
        try:
            with transaction.shared() as connection:
                return _run_all(commands, runs, token, batch, connection)
        except Exception:  # the stretch's commit failed, so nothing of it was kept
            # From the stretch's start, tokens too: what the first run checked may hold
            # only after a change (a promotion, say) that this run makes later, or not at all.
            batch.callers.clear()
            batch.answered, batch.refusal = answered, None
    return _run_all(commands, runs, token, batch)


def _run_all(
    commands: list[Any],
    runs: list[bool],
    token: str | None,
    batch: Batch,
    shared: Connection | None = None,
) -> list[Any]:
    """Every command's envelope, in order; None where `runs` says there is no command
    to run (a JSON-RPC request answered by its own error).

    In the shared transaction, consecutive commands of an action with a `many`
    handler (e.g. a burst of creates) run together (`dispatcher.execute_many`); gives up
    when the shared connection is lost.
    """
    outcomes: list[Any] = []
    while len(outcomes) < len(commands):
        if shared is not None and shared.invalidated:
            raise ConnectionError("the batch's database connection was lost")
        start = len(outcomes)
        action = dispatcher.runs_together(commands[start]) if shared is not None else None
        end = start + 1
        while action and end < len(commands) and dispatcher.runs_together(commands[end]) == action:
            end += 1
        if action:
            outcomes.extend(dispatcher.execute_many(commands[start:end], token, batch))
        elif not runs[start]:
            outcomes.append(None)  # answered by the request's own error
        else:
            outcomes.append(execute(commands[start], token, batch))
    return outcomes
