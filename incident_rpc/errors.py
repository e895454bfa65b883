"""The error vocabulary and the one function that turns any exception into an envelope.

Handlers raise an `RpcError` subclass; everything else that escapes (a database
outage, a stale row, a bug) is classified here, so no other module builds a
failure envelope. The legacy dialect's own codes and words for some of them are its
own (dispatch/dialects.py).
"""

import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("incident_rpc")


def _no_request_id() -> str | None:
    return None


# The id of the request being served, which an internal error names so that its log
# line can be found; telemetry (a layer above) puts its own function here at start-up.
current_request_id: Callable[[], str | None] = _no_request_id


class RpcError(Exception):
    status = 500
    message = "internal error"

    def __init__(self, message: str | None = None, data: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.message)
        if message:
            self.message = message
        self.data = data or {}


class BadRequest(RpcError):
    status, message = 400, "bad request"


class InvalidJSON(BadRequest):
    """Not JSON, or JSON that breaks a rule of jsonio.parse (the message names which);
    the legacy dialect has one sentence for all of it."""

    message = "Invalid JSON"


class InvalidParams(BadRequest):
    """`sentence`: the first failing field's own message, for a dialect whose schemas
    word each field's failure (the legacy one answers with that sentence alone)."""

    def __init__(self, errors: dict[str, Any], sentence: str | None = None) -> None:
        super().__init__(f"invalid parameters: {', '.join(sorted(errors))}", {"errors": errors})
        self.sentence = sentence


class Unauthorized(RpcError):
    status, message = 401, "authentication required"


class MissingToken(Unauthorized):
    message = "Token is required"


class InvalidToken(Unauthorized):
    message = "Invalid token"


class ExpiredToken(Unauthorized):
    message = "Token is expired"


class BadCredentials(Unauthorized):
    message = "Invalid credentials"


class Forbidden(RpcError):
    status, message = 403, "your role does not allow this action"


class NotFound(RpcError):
    status, message = 404, "not found"


class IncidentNotFound(NotFound):
    """No incident with that id (or none the caller may see)."""


class MethodNotAllowed(RpcError):
    status, message = 405, "POST required"


class RequestTimeout(RpcError):
    status, message = 408, "the request body took too long to arrive"


class Conflict(RpcError):
    status, message = 409, "conflict"


class PayloadTooLarge(RpcError):
    status, message = 413, "request body too large"


class AnswerTooLarge(PayloadTooLarge):
    """A batch's answers would pass MAX_BATCH_ANSWER: this command (undone) and the rest
    of the batch are not run."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the batch's answers would pass MAX_BATCH_ANSWER ({limit} bytes), so this command"
            " and the rest of the batch were not run; send them in another batch",
            {"max_batch_answer": limit},
        )


class TooManyRequests(RpcError):
    status, message = 429, "too many requests"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, {"retry_after": retry_after})


class Unavailable(RpcError):
    status, message = 503, "the database is unavailable; retry later"


class InternalError(RpcError):
    status = 500


_HTTP_ERRORS: dict[int, type[RpcError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


def classify(exc: BaseException) -> RpcError:
    """Map any exception to an RpcError, logging the ones that are our bugs."""
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, HTTPException) and exc.code in _HTTP_ERRORS:
        return _HTTP_ERRORS[exc.code]()
    if isinstance(exc, StaleDataError):
        return Conflict("the incident was changed by someone else; fetch it and retry")
    if isinstance(exc, sa_exc.IntegrityError) and _is_unique_violation(exc):
        # e.g. reopening an incident whose dedup_key another open incident now holds
        return Conflict("the change conflicts with an existing record")
    if isinstance(exc, sa_exc.DBAPIError) and (
        exc.connection_invalidated
        or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
    ):
        log.warning("database unavailable: %s", type(exc.orig).__name__)
        return Unavailable()
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return Unavailable()
    request_id = current_request_id() or uuid.uuid4().hex[:12]
    log.exception("unhandled error, request id %s", request_id)
    return InternalError(f"internal error, request id {request_id}")


def database_gone(exc: BaseException) -> bool:
    """No statement will get through until the database is back: no connection could
    be had, or the one in use was lost. Not so for one statement the server refused
    (a deadlock, a statement timeout: those carry a SQLSTATE)."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    return exc.connection_invalidated or getattr(exc.orig, "pgcode", "") is None


def _is_unique_violation(exc: sa_exc.IntegrityError) -> bool:
    code = getattr(exc.orig, "pgcode", None)  # PostgreSQL; SQLite only says it in words
    return code == "23505" or "UNIQUE constraint failed" in str(exc.orig)


def envelope(success: bool, status: int, data: Any = None, error: str = "") -> dict[str, Any]:
    return {"success": success, "error": error, "status": status, "data": data or {}}


def to_envelope(exc: BaseException) -> dict[str, Any]:
    """The failure envelope for `exc` in the native dialect (others: dispatch/dialects.py)."""
    error = classify(exc)
    return envelope(False, error.status, error.data, error.message)
