"""The legacy dialect's list (`get_all` on /incidents/get_all/): every match, streamed."""

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

from incident_rpc.access import policy
from incident_rpc.dispatch.registry import Context, Reply, Stream
from incident_rpc.extensions import db
from incident_rpc.models import Incident
from incident_rpc.runtime import jsonio
from incident_rpc.schemas import legacy


def stream_incidents(ctx: Context, params: dict[str, Any]) -> Stream | Reply:
    """Every match, oldest first, streamed in chunks so memory stays flat at any size.

    The stream outlives the request's session (Flask tears that down when the view
    returns), so it reads on a connection of its own, closed with the response.
    """
    query = select(
        Incident.id, Incident.description, Incident.status, Incident.source, Incident.created_at
    ).order_by(Incident.created_at, Incident.id)
    query = policy.readable(query, ctx.caller)
    if "status" in params:
        query = query.where(Incident.status == params["status"])
    connection = db.engine.connect()
    try:
        streaming = connection.execution_options(yield_per=2000, read_only=True)
        chunks = streaming.execute(query).partitions()
        first = next(chunks, None)
    except BaseException:
        connection.close()
        raise
    if first is None:  # the older service's quirk: an empty list is a successful 404
        connection.close()
        return Reply({"incidents": []}, 404)
    return Stream(_envelope_around(first, chunks), connection.close)


def _envelope_around(first: list[Any], chunks: Iterator[list[Any]]) -> Iterator[bytes]:
    yield b'{"success": true, "error": "", "status": 200, "data": {"incidents": ['
    yield _items(first)
    for chunk in chunks:
        yield b"," + _items(chunk)
    yield b"]}}"


def _items(rows: list[Any]) -> bytes:
    return jsonio.encode(legacy.incident_out.dump(rows, many=True))[1:-1]
