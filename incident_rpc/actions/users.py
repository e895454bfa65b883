"""Account actions: sign-in."""

from typing import Any

from .. import legacy
from ..auth import issue_token, login
from ..errors import BadCredentials
from ..rpc import Context, action
from ..schemas import AuthorizationParams, token_out


@action(
    "authorization", params=AuthorizationParams(), role=None, output=token_out,
    legacy_params=legacy.AuthorizationParams(),
)  # fmt: skip
def authorization(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Exchange a username and password for a bearer token."""
    username, password = params.get("username"), params.get("password")
    credentials = (username, password)
    if not all(isinstance(text, str) and text and "\x00" not in text for text in credentials):
        raise BadCredentials()  # reached only by the legacy dialect's looser schema
    return issue_token(login(username, password))
