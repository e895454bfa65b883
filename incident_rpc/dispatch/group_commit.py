"""Group commit: single commands that arrive together share one transaction.

Monitoring agents send creates by the thousand, each in a request of its own,
and under load several are in one worker at once. Alone, each pays for its own
BEGIN, token check, INSERT, event INSERT and durable COMMIT. Here a command that
finds no group being written runs at once, once the other requests the worker has
read already have had their turn to join it (a yield to gevent); commands that
arrive while a group is being written queue, and when it is done the first of
them runs the whole queue as one group through the path a batch uses for a run
of like commands (`dispatcher.execute_many`): each command is still authenticated,
validated and answered on its own, their rows go into one INSERT and one commit,
and if that commit fails each runs again alone. So no request waits for a timer,
and every answer still follows the durable commit of what it describes.

A queued command gives up its admission slot (runtime/admission.py) while it waits, so
the queue can grow to every connection the worker holds: the bigger the group, the
cheaper each create (figures: docs/benchmarks.md).

Only commands that `dispatcher.runs_together` picks (an action with a `many` handler,
sent without a request_id) are grouped, in whichever dialect they came: a legacy
create and a JSON-RPC one are grouped like a native one (each dialect in groups of its
own, answered in its own words). GROUP_COMMIT=0 turns it off.
"""

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from incident_rpc.dispatch import dispatcher
from incident_rpc.dispatch.batch import Batch
from incident_rpc.dispatch.dialects import NATIVE, Dialect
from incident_rpc.errors import to_envelope
from incident_rpc.runtime import admission
from incident_rpc.telemetry import metrics

_GROUPS = "incident_rpc.groups"  # app.extensions: (action, dialect) -> Group, in this process


@dataclass(eq=False)
class _Waiting:
    command: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    answer: Any = None
    leads: bool = False  # woken to run the next group rather than with its answer


class Group:
    """The queue of one action's commands in one dialect; one group of it runs at a
    time, per process."""

    def __init__(self, limit: int, dialect: Dialect) -> None:
        self.limit = limit
        self.dialect = dialect
        self._lock = threading.Lock()  # held only to look at the queue, never while running
        self._queue: list[_Waiting] = []
        self._running = False

    def run(self, command: dict[str, Any]) -> Any:
        """The command's answer, once it has run alone or with those queued beside it."""
        mine = _Waiting(command)
        with self._lock:
            if self._running:
                self._queue.append(mine)
            else:
                self._running = True
                mine.leads = True
        if mine.leads:
            # Let the requests this worker has read already reach the queue first: a
            # yield, not a timer (with nothing else ready it returns at once). Under
            # load the group is bigger, and each create cheaper (docs/benchmarks.md).
            time.sleep(0)
        else:
            admission.step_aside()  # queued, it holds nothing and does nothing
            mine.done.wait()  # for its answer, or to lead the next group
        if mine.leads:  # first, or woken to lead the next group
            self._lead(mine)
        return mine.answer

    def _lead(self, mine: _Waiting) -> None:
        with self._lock:  # what queued meanwhile joins this command
            group = [mine, *self._queue[: self.limit - 1]]
            del self._queue[: self.limit - 1]
        try:
            answers = _run_group([waiting.command for waiting in group], self.dialect)
            for waiting, answer in zip(group, answers, strict=True):
                waiting.answer = answer
        finally:
            for waiting in group:
                if waiting.answer is None:  # the group was cut short (never by a failed command)
                    waiting.answer = to_envelope(RuntimeError("a grouped command did not finish"))
                if waiting is not mine:
                    waiting.done.set()
            self._hand_on()

    def _hand_on(self) -> None:
        """The next group is led by the first command that queued for it."""
        with self._lock:
            if not self._queue:
                self._running = False
                return
            first = self._queue.pop(0)
        first.leads = True
        first.done.set()


def _run_group(commands: list[dict[str, Any]], dialect: Dialect) -> list[Any]:
    metrics.group_commit(len(commands))
    if len(commands) == 1:
        return [dispatcher.execute(commands[0], dialect=dialect)]
    return dispatcher.execute_many(commands, None, Batch(), dialect)


def submit(command: Any, header_token: str | None, dialect: Dialect = NATIVE) -> Any:
    """The envelope of a request's one command (in any dialect: native, legacy or a
    JSON-RPC request), grouped with its like neighbours."""
    grouped = current_app.config["GROUP_COMMIT"]
    action = dispatcher.runs_together(command) if grouped else None
    if action is None:
        return dispatcher.execute(command, header_token, dialect=dialect)
    if "token" not in command and header_token is not None:
        command = {**command, "token": header_token}
    groups = current_app.extensions.setdefault(_GROUPS, {})
    key = (action, dialect.name)
    if key not in groups:  # made in the worker on first use, after gunicorn forked
        groups.setdefault(key, Group(current_app.config["MAX_BATCH"], dialect))
    return groups[key].run(command)
