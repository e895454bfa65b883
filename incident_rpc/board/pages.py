"""The board's routes: `/` (the board), `/docs` (the API reference), `/openrpc.json`,
and the static files under `/board/`; each response gets the headers of headers.py."""

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from incident_rpc.board.headers import protect
from incident_rpc.dispatch import openrpc
from incident_rpc.runtime import jsonio

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
