"""Self-description: `describe` (JSON-RPC: `rpc.discover`) answers the OpenRPC document."""

from typing import Any

from incident_rpc.dispatch import openrpc
from incident_rpc.dispatch.registry import Context, action
from incident_rpc.schemas.incidents import Params


@action("describe", params=Params(), role=None)
def describe(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Every action with its parameters and result, as an OpenRPC document."""
    return openrpc.document()
