"""The legacy dialect's routes: the older service's per-action URLs, word for word."""

from flask import Blueprint, Response

from incident_rpc.dispatch import group_commit
from incident_rpc.dispatch.dialects import LEGACY
from incident_rpc.errors import InvalidJSON
from incident_rpc.http.responses import POST_ONLY, bearer_token, read_json, respond

bp = Blueprint("legacy", __name__)


@bp.route("/users/authorization/", defaults={"name": "authorization"}, **POST_ONLY)
@bp.route("/incidents/<name>/", **POST_ONLY)
def legacy_endpoint(name: str) -> Response:
    try:
        body = read_json()
    except InvalidJSON as error:  # in this dialect's words (contract 5.1: "Invalid JSON")
        return respond(LEGACY.failure(error))
    # The URL names the action, whatever the body says (it ignores keys it does not know).
    command = {**body, "action": name} if isinstance(body, dict) else body
    return respond(group_commit.submit(command, bearer_token(), LEGACY))
