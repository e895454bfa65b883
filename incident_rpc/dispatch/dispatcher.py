"""The dispatcher: everything around a handler, for one command or a run of them.

`execute` (and `execute_many` for consecutive commands of one action in a batch) owns
lookup, authentication, validation, replay of a `request_id`, the handler call, the
answer's envelope and the commit; `_guarded` is the one place where an exception
becomes an envelope. The transaction of a whole batch is http/rpc.py's.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError

from incident_rpc.access.auth import Caller, authenticate
from incident_rpc.dispatch import replay, transaction
from incident_rpc.dispatch.batch import Batch
from incident_rpc.dispatch.dialects import NATIVE, Dialect
from incident_rpc.dispatch.registry import Action, Context, Reply, Stream, lookup
from incident_rpc.errors import (
    BadRequest,
    Forbidden,
    InvalidParams,
    NotFound,
    database_gone,
    envelope,
)
from incident_rpc.runtime import database
from incident_rpc.telemetry import request_ids

log = logging.getLogger("incident_rpc")


def _first_message(messages: Any) -> str:
    """The first sentence of a marshmallow error tree (the legacy dialect names one)."""
    while isinstance(messages, dict | list):
        messages = next(iter(messages.values() if isinstance(messages, dict) else messages))
    return str(messages)


def _caller(token: Any, batch: Batch | None) -> Caller:
    """Authenticate once per distinct token within one batch (a batch repeats them), or
    again after a command that `revokes` (so that a revoked token fails at once)."""
    if batch is None or not isinstance(token, str):
        return authenticate(token)
    if token not in batch.callers:
        batch.callers[token] = authenticate(token)
    return batch.callers[token]


@dataclass(frozen=True)
class Call:
    """A command past lookup, authentication and validation: ready for its handler."""

    spec: Action
    dialect: Dialect
    ctx: Context
    params: dict[str, Any]  # as sent, less action, token and request_id
    values: dict[str, Any]  # as validated
    request_id: str | None


def _prepare(command: Any, dialect: Dialect, header_token: str | None, batch: Batch | None) -> Call:
    if not isinstance(command, dict):
        raise dialect.not_an_object()
    name = command.get("action")
    if not isinstance(name, str) or not name:
        raise BadRequest("action is required")
    spec = lookup(name)
    if spec is None:
        raise NotFound(f"unknown action {name[:64]!r}")
    if spec.reads_only and batch is None:
        database.use_reads_session()
    caller = None
    if spec.role is not None:
        caller = _caller(command.get("token", header_token), batch)
        request_ids.note(actor=caller.username)  # for its log lines (the first one stands)
        if not caller.has_role(spec.role) and not (spec.monitor and caller.is_monitor):
            raise Forbidden()
    params = {key: value for key, value in command.items() if key not in ("action", "token")}
    request_id = replay.take_request_id(params) if spec.changes else None
    try:
        values = dialect.params(spec).load(params)
    except ValidationError as error:
        sentence = _first_message(error.messages) if dialect.worded_params(spec) else None
        raise InvalidParams(error.messages, sentence) from error
    return Call(spec, dialect, Context(caller), params, values, request_id)


def _answer(call: Call, result: Any) -> Any:
    """The success envelope of a handler's result, dumped before the commit (a
    request_id's answer is stored in the same transaction)."""
    if isinstance(result, Stream):
        return result
    status = call.spec.status
    if isinstance(result, Reply):
        result, status = result.data, result.status
    output = call.dialect.output(call.spec)
    return envelope(True, status, output.dump(result) if output else result)


def _run(command: Any, dialect: Dialect, header_token: str | None, batch: Batch | None) -> Any:
    call = _prepare(command, dialect, header_token, batch)
    claim = None
    if call.request_id is not None:
        claim = replay.claim(call.ctx.caller, call.request_id, call.spec.name, call.params)
        if claim.earlier:
            transaction.rollback()
            if batch is not None:
                batch.spend([claim.earlier])
            return claim.earlier
    answer = _answer(call, call.dialect.handler(call.spec)(call.ctx, call.values))
    if isinstance(answer, Stream):
        return answer
    if call.spec.revokes:
        transaction.changes_credentials()
    if batch is not None:
        batch.spend([answer])
    if claim:
        claim.remember(answer)
    if not call.spec.reads_only:  # (a read's session is closed at teardown)
        transaction.commit()  # in a batch: the command's savepoint
    if call.spec.revokes and batch is not None:  # the next command sees what it changed
        batch.callers.clear()
    return answer


def _guarded(step: Callable[[], Any], dialect: Dialect, batch: Batch | None = None) -> Any:
    """The one place where an exception becomes an envelope: `step()`, or its failure."""
    if batch is not None and batch.refusal is not None:
        return batch.refusal
    try:
        return step()
    except Exception as exc:
        try:
            transaction.rollback()
        except Exception:  # a batch's connection is gone: its commit fails, and it runs again
            log.warning("rollback failed: %s", type(exc).__name__)
        answer = dialect.failure(exc)
        if batch is not None and database_gone(exc):
            batch.refusal = answer
        return answer


def execute(
    command: Any,
    header_token: str | None = None,
    batch: Batch | None = None,
    dialect: Dialect = NATIVE,
):
    """Run one command; answer its envelope (or a Stream). Never raises."""
    return _guarded(lambda: _run(command, dialect, header_token, batch), dialect, batch)


def runs_together(command: Any) -> str | None:
    """The action of a command that may run with its like neighbours, if any: one
    whose action has a `many` handler, sent without a request_id."""
    if not isinstance(command, dict) or "request_id" in command:
        return None
    name = command.get("action")
    spec = lookup(name) if isinstance(name, str) else None
    return name if spec is not None and spec.many is not None else None


def runs_alone(command: Any) -> bool:
    """Whether a batch must run this command outside its shared transaction: its
    action is `slow`, and would hold that transaction open (and with it every later
    event, and SQLite's write lock) across its password work."""
    name = command.get("action") if isinstance(command, dict) else None
    spec = lookup(name) if isinstance(name, str) else None
    return spec is not None and spec.slow


def execute_many(
    commands: list[Any], header_token: str | None, batch: Batch, dialect: Dialect = NATIVE
) -> list[Any]:
    """Run consecutive commands of one action (see `runs_together`) in one handler call.

    Each is authenticated and validated on its own, and answered on its own when
    that fails; the others share one `many` call and one commit. When that call
    fails, each of them runs again on its own, so every answer is its own.
    """
    answers = [
        _guarded(lambda c=c: _prepare(c, dialect, header_token, batch), dialect, batch)
        for c in commands
    ]
    ready = [(n, call) for n, call in enumerate(answers) if isinstance(call, Call)]
    if not ready:
        return answers
    done = _guarded(lambda: _run_many([call for _, call in ready], batch), dialect, batch)
    if not isinstance(done, list):
        done = [execute(commands[n], header_token, batch, dialect) for n, _ in ready]
    for (n, _), answer in zip(ready, done, strict=True):
        answers[n] = answer
    return answers


def _run_many(calls: list[Call], batch: Batch) -> list[Any]:
    many = calls[0].spec.many
    assert many is not None
    results = many([(call.ctx, call.values) for call in calls])
    answers = [_answer(call, result) for call, result in zip(calls, results, strict=True)]
    batch.spend(answers)
    transaction.commit()
    return answers
