"""Liveness and readiness probes for load balancers and orchestrators."""

from flask import Blueprint, Response, current_app

from incident_rpc.errors import Unavailable, envelope, to_envelope
from incident_rpc.http.responses import respond
from incident_rpc.runtime import admission
from incident_rpc.runtime.database import ping

bp = Blueprint("health", __name__)


@bp.get("/healthz", strict_slashes=False)
def healthz() -> Response:
    """The worker answers and is not saturated; says nothing about the database.

    Saturated: every admission slot has been held for HEALTH_STALL_TIMEOUT seconds
    with none changing hands, so no new command has started in that time. The probe
    itself takes no slot, so it can tell."""
    limit = current_app.config["HEALTH_STALL_TIMEOUT"]
    stalled = admission.stalled_for()
    if limit > 0 and stalled >= limit:
        busy = f"every request slot of this worker has been busy for {stalled:.0f} s"
        return respond(to_envelope(Unavailable(busy)))
    return respond(envelope(True, 200, {"alive": True}))


@bp.get("/readyz", strict_slashes=False)
def readyz() -> Response:
    """Ready when the database answers; 503 while it does not."""
    try:
        ping()
    except Exception as exc:
        return respond(to_envelope(exc))
    return respond(envelope(True, 200, {"database": "ok"}))
