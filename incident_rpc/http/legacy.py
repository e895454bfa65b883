"""The legacy dialect's routes: the older service's per-action URLs, word for word."""

from flask import Blueprint, Response

from incident_rpc.dispatch.dispatcher import execute
from incident_rpc.errors import InvalidJSON, to_envelope
from incident_rpc.http.responses import POST_ONLY, bearer_token, read_json, respond

bp = Blueprint("legacy", __name__)


@bp.route("/users/authorization/", defaults={"name": "authorization"}, **POST_ONLY)
@bp.route("/incidents/<name>/", **POST_ONLY)
def legacy_endpoint(name: str) -> Response:
    try:
        body = read_json()
    except InvalidJSON as error:  # in this dialect's words (contract 5.1: "Invalid JSON")
        return respond(to_envelope(error, legacy=True))
    return respond(execute(body, name, bearer_token()))
