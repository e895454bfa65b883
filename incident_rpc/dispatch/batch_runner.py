"""How a batch runs: in stretches, each in one shared transaction, like commands together.

- The batch runs in one database transaction, committed once at the end
  (transaction.shared), and the session joins it so that each command's own commit
  or rollback only releases or rolls back a savepoint: an element that fails is
  undone alone, and a batch of 1,000 pays for one durable commit instead of 1,000.
  If that commit fails (the database went away), nothing of the batch is kept and
  it runs again with one transaction per element, so the answers always describe
  what is stored.
- Except for slow commands (`dispatcher.runs_alone`: sign-ins and whatever else checks or
  hashes a password, about 80 ms each): each runs on its own, outside the shared
  transaction, which commits before it and starts again after it. Kept inside, a
  run of sign-ins would hold the transaction open for seconds, and with it every
  other client's events (they are delivered in the order of the writing
  transactions, events/journal.py) and, on SQLite, every writer.
- Consecutive commands of an action with a `many` handler (a burst of creates) run
  together (`dispatcher.execute_many`).
"""

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection

from incident_rpc.dispatch import dispatcher, transaction
from incident_rpc.dispatch.batch import Batch


def run(commands: list[Any], runs: list[bool], token: str | None, batch: Batch) -> list[Any]:
    """Every command's envelope, in order; None where `runs` says there is no command
    to run (a JSON-RPC request answered by its own error)."""
    outcomes: list[Any] = []
    for start, end, alone in _stretches(commands):
        stretch = commands[start:end], runs[start:end]
        outcomes += _run_stretch(*stretch, token, batch, shared=not alone)
    return outcomes


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
            outcomes.append(dispatcher.execute(commands[start], token, batch))
    return outcomes
