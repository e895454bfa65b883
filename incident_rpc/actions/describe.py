"""Self-description: `describe` (JSON-RPC: `rpc.discover`) answers the OpenRPC document."""

from typing import Any

from .. import openrpc
from ..rpc import Context, action
from ..schemas import Params


@action("describe", params=Params(), role=None)
def describe(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Every action with its parameters and result, as an OpenRPC document."""
    return openrpc.document()
