"""The action registry: every action is declared once with `@action(...)`.

A declaration names the action, its parameter schema, the role it needs, its output
schema, whether it changes anything (then it takes a `request_id`, see dispatch/replay.py),
whether it may revoke credentials or change what a user may do (then a batch checks
its tokens again after it), whether a `monitor` API key may call it below its role
and, optionally, the legacy dialect's Form of it, and a `many` handler for
consecutive commands of a batch.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import current_app
from marshmallow import Schema

from incident_rpc.access.auth import Caller


@dataclass(frozen=True)
class Context:
    """What a handler may know about the call besides its parameters: its own, never
    another request's (a grouped command runs in its leader's request)."""

    caller: Caller | None

    @property
    def actor(self) -> str:
        return self.caller.username if self.caller else "anonymous"


@dataclass(frozen=True)
class Reply:
    """A handler's result when the status differs from the action's usual one."""

    data: Any
    status: int


@dataclass(frozen=True)
class Stream:
    """A handler's answer sent as it is produced (the legacy list): the envelope's
    bytes in pieces, and what to close once the last piece has gone out. The HTTP
    adapter turns it into a streamed response; it ends its own transaction."""

    chunks: Iterator[bytes]
    close: Callable[[], None]


Handler = Callable[[Context, dict[str, Any]], Any]
# Runs several commands of one action at once (in a batch): one result per command.
ManyHandler = Callable[[list[tuple[Context, dict[str, Any]]]], list[Any]]


@dataclass(frozen=True)
class Form:
    """The legacy dialect's version of an action, where it differs: its parameter
    schema (with the older service's sentences), its answer, its handler."""

    params: Schema | None = None
    output: Schema | None = None
    handler: Handler | None = None


@dataclass(frozen=True)
class Action:
    name: str
    handler: Handler
    params: Schema
    role: str | None  # None: no token needed
    output: Schema | None
    status: int
    legacy: Form | None
    changes: bool = False  # True: the action changes data, and so takes a request_id
    enabled_by: str | None = None  # a setting that switches the action on; off: unknown
    many: ManyHandler | None = None  # consecutive commands of a batch in one call
    reads_only: bool = False  # True: it only reads (database.use_reads_session)
    # True: it may revoke a credential or change a user's rights (logout, key_revoke,
    # user_update, ...): a batch forgets the callers it has checked once it succeeds.
    revokes: bool = False
    # True: a `monitor` API key may call it too, below its role; access/policy.py confines
    # such a key to the incidents it raised.
    monitor: bool = False
    # True: it checks or hashes a password (about 80 ms each), outside any transaction
    # (access/auth.py); a batch runs it on its own, never in its shared transaction (http/rpc.py).
    slow: bool = False


ACTIONS: dict[str, Action] = {}


def action(
    name: str,
    *,
    params: Schema,
    role: str | None,
    output: Schema | None = None,
    status: int = 200,
    legacy: Form | None = None,
    changes: bool = False,
    enabled_by: str | None = None,
    many: ManyHandler | None = None,
    reads_only: bool = False,
    revokes: bool = False,
    monitor: bool = False,
    slow: bool = False,
) -> Callable[[Handler], Handler]:
    """Register a handler under `name`; see the module docstring."""

    def register(handler: Handler) -> Handler:
        if name in ACTIONS:
            raise ValueError(f"action {name!r} is declared twice")
        ACTIONS[name] = Action(
            name, handler, params, role, output, status,
            legacy, changes, enabled_by, many, reads_only,
            revokes, monitor, slow,
        )  # fmt: skip
        return handler

    return register


def lookup(name: str) -> Action | None:
    """The action registered under `name`, unless a setting switches it off."""
    spec = ACTIONS.get(name)
    if spec is None or (spec.enabled_by and not current_app.config[spec.enabled_by]):
        return None
    return spec
