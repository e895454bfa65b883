"""What every HTTP adapter shares: reading a body, the bearer token, writing an answer."""

from typing import Any

from flask import Response, request
from werkzeug.exceptions import MethodNotAllowed

from incident_rpc.dispatch.registry import Stream
from incident_rpc.errors import to_envelope
from incident_rpc.runtime import jsonio

POST_ONLY = {"methods": ["POST"], "strict_slashes": False, "provide_automatic_options": False}


def read_json() -> Any:
    """The request body as JSON, whatever the Content-Type says."""
    return jsonio.parse(request.get_data(cache=False))


def bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def respond(result: Any) -> Response:
    """An answer's envelope (or a handler's Stream) as the HTTP response."""
    if isinstance(result, Stream):
        response = Response(result.chunks, status=200, mimetype="application/json")
        response.call_on_close(result.close)
        return response
    return Response(jsonio.encode(result), status=result["status"], mimetype="application/json")


def outside_a_command(exc: Exception) -> Response:
    """Failures before a command exists: bad route or method, oversize or broken body.

    Their words are the same in both dialects, so no dialect is needed here. A 405
    names the methods the path takes (`Allow`), as HTTP requires.
    """
    response = respond(to_envelope(exc))
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response
