"""The operator board (`GET /`) and the browsable API reference (`GET /docs`,
`GET /openrpc.json`): static pages shipped in the package, speaking only the public
API (`/rpc`, `/ws`) from the browser. Nothing is rendered on the server and nothing
is fetched from elsewhere, so the pages work on an air-gapped network.

Every response of this blueprint carries a strict Content-Security-Policy (scripts
and styles from this origin only, no inline script, connections to this origin's
HTTP and WebSocket), refuses framing and content sniffing (headers.py).
"""

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from .. import jsonio, openrpc
from . import cors  # noqa: F401  (create_app calls cors.init_app)
from .headers import protect

STATIC = Path(__file__).resolve().parent / "static"
bp = Blueprint("board", __name__, static_folder=str(STATIC), static_url_path="/board")
bp.after_request(protect)


@bp.get("/")
def board() -> Response:
    """The board's one page; the scripts it loads draw every view."""
    return send_from_directory(STATIC, "index.html", max_age=0)


@bp.get("/docs", strict_slashes=False)
def docs() -> Response:
    """The API reference, drawn in the browser from /openrpc.json."""
    return send_from_directory(STATIC, "docs.html", max_age=0)


@bp.get("/openrpc.json")
def openrpc_document() -> Response:
    """The OpenRPC document that `describe` answers, as a plain JSON file."""
    return Response(jsonio.encode(openrpc.document()), mimetype="application/json")
