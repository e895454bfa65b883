"""The dialects a command may arrive in, each one object: how it is read and answered.

The native dialect is the contract's; the legacy dialect is the older service's
(contract section 5.1): its own schemas where an action declares a `legacy` Form,
and its own status codes and sentences for some failures, word for word. JSON-RPC
and Alertmanager carry native commands: their adapters in http/ translate the
envelope, not the command. PagerDuty's events (http/pagerduty.py) are read by schemas
of their own, straight into the native values of the command each one becomes.
"""

from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema

from incident_rpc.dispatch.registry import Action, Handler
from incident_rpc.errors import (
    BadRequest,
    IncidentNotFound,
    InternalError,
    InvalidJSON,
    InvalidParams,
    MissingToken,
    RpcError,
    classify,
    envelope,
)


@dataclass(frozen=True)
class Dialect:
    name: str
    # (status, sentence) in place of an error's own, None keeping that part; the most
    # specific class of an error that is listed wins.
    words: dict[type[RpcError], tuple[int | None, str | None]] = field(default_factory=dict)
    uses_forms: bool = False  # reads and answers with an action's `legacy` Form
    sentence_of_params: bool = False  # a bad parameter: the first failing field's sentence
    # By action name: the dialect's own schema of its parameters, in place of the native one.
    schemas: dict[str, Schema] = field(default_factory=dict)

    def params(self, spec: Action) -> Schema:
        own = self.schemas.get(spec.name)
        return own or (self._form(spec) and spec.legacy.params) or spec.params

    def output(self, spec: Action) -> Schema | None:
        return (self._form(spec) and spec.legacy.output) or spec.output

    def handler(self, spec: Action) -> Handler:
        return (self._form(spec) and spec.legacy.handler) or spec.handler

    def worded_params(self, spec: Action) -> bool:
        """Whether a parameter error is told in the sentence of its first field."""
        return self.sentence_of_params and self.params(spec) is not spec.params

    def _form(self, spec: Action) -> bool:
        return self.uses_forms and spec.legacy is not None

    def not_an_object(self) -> RpcError:
        return InvalidJSON() if self.uses_forms else BadRequest("the command must be a JSON object")

    def failure(self, exc: BaseException) -> dict[str, Any]:
        """The failure envelope of `exc` in this dialect's words."""
        error = classify(exc)
        status, message = error.status, error.message
        for kind in type(error).__mro__:
            if kind in self.words:
                status, message = (
                    self.words[kind][0] or status,
                    self.words[kind][1] or message,
                )
                break
        if isinstance(error, InvalidParams) and error.sentence:
            message = error.sentence
        return envelope(False, status, error.data, message)


NATIVE = Dialect("native")
LEGACY = Dialect(
    "legacy",
    words={
        MissingToken: (400, None),
        InvalidJSON: (None, "Invalid JSON"),
        IncidentNotFound: (None, "Incident have not found"),
        InternalError: (None, "Global error try later"),
    },
    uses_forms=True,
    sentence_of_params=True,
)
