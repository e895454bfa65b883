"""Liveness and readiness probes for load balancers and orchestrators."""

from flask import Blueprint, Response

from .database import ping
from .errors import envelope, to_envelope
from .rpc import respond

bp = Blueprint("health", __name__)


@bp.get("/healthz", strict_slashes=False)
def healthz() -> Response:
    """The process answers; says nothing about the database."""
    return respond(envelope(True, 200, {"alive": True}))


@bp.get("/readyz", strict_slashes=False)
def readyz() -> Response:
    """Ready when the database answers; 503 while it does not."""
    try:
        ping()
    except Exception as exc:
        return respond(to_envelope(exc))
    return respond(envelope(True, 200, {"database": "ok"}))
