"""Cross-origin access to `/rpc` and `/openrpc.json` for the origins in CORS_ORIGINS
(a comma-separated list; empty: none, the default), through flask-cors.

The command routes take POST only and answer any other method with 405, so a
browser's preflight (OPTIONS with Access-Control-Request-Method) from an allowed
origin is answered here with an empty 204, to which flask-cors adds its headers.
Credentials (cookies) are never allowed: tokens travel in the body or in
`Authorization`, which the preflight lets through.
"""

from flask import Flask, Response, request
from flask_cors import CORS

PATHS = ("/rpc", "/openrpc.json")


def origins(setting: str | None) -> list[str]:
    return [origin.strip().rstrip("/") for origin in (setting or "").split(",") if origin.strip()]


def init_app(app: Flask) -> None:
    allowed = origins(app.config.get("CORS_ORIGINS"))
    if not allowed:
        return
    resources = {f"{path}/?$": {"origins": allowed} for path in PATHS}
    CORS(
        app, resources=resources, methods=["GET", "POST"], max_age=600,
        allow_headers=["Authorization", "Content-Type"], supports_credentials=False,
    )  # fmt: skip

    @app.before_request
    def preflight() -> Response | None:
        if (
            request.method == "OPTIONS"
            and request.path.rstrip("/") in PATHS
            and "Access-Control-Request-Method" in request.headers
            and request.headers.get("Origin", "").rstrip("/") in allowed
        ):
            return Response(status=204)
        return None
