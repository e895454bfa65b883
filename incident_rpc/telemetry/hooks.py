"""Per-request telemetry: the id, the count and the access line of every request.

`init_app` gives every request an id (request_ids.py) before anything else runs,
and after it has answered writes the id into the `X-Request-Id` header, counts it
(metrics.py) and, with ACCESS_LOG on, writes its access line (logs.py).
"""

import logging
import time
from collections.abc import Iterable

from flask import Flask, Response, request

from incident_rpc import errors
from incident_rpc.telemetry import metrics, request_ids

access_log = logging.getLogger("incident_rpc.access")


def init_app(app: Flask, actions: Iterable[str]) -> None:
    """`actions`: the registered action names, the only values of the action label."""
    metrics.init_app(app, actions)
    errors.current_request_id = request_ids.current_id  # named in internal errors
    log_access = app.config["ACCESS_LOG"]

    @app.before_request
    def open_record() -> None:
        request_ids.open_record(request.headers.get(request_ids.HEADER))

    @app.after_request
    def close_record(response: Response) -> Response:
        record = request_ids.current()
        if record is None:  # (a request that failed before before_request)
            return response
        response.headers[request_ids.HEADER] = record.request_id
        record.status = response.status_code
        record.duration = time.perf_counter() - record.started
        dialect, action = request_ids.route_of(record)
        metrics.observe_request(dialect, action, record.status, record.duration)
        if log_access:
            access_log.info(
                "%s %s %s %.1f ms", request.method, request.path, record.status,
                record.duration * 1000,
            )  # fmt: skip
        return response
