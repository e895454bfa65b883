"""The parameters of `stats`: a window of creation times and an optional grouping.

The window defaults to the 30 days up to now and spans at most MAX_DAYS days, so that
`per_day` (one row a day) stays small; `since` must come before `until`.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import ValidationError, post_load, validate

from incident_rpc.schemas.fields import Text, Timestamp
from incident_rpc.schemas.incidents import Params

GROUP_BY = ("severity", "source", "assignee", "status")
DEFAULT_DAYS = 30
MAX_DAYS = 366


class StatsParams(Params):
    since = Timestamp()
    until = Timestamp()
    group_by = Text(
        allow_none=True,
        validate=[validate.OneOf(GROUP_BY, error=f"Must be one of: {', '.join(GROUP_BY)}.")],
    )

    @post_load
    def window(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        until = data.get("until") or datetime.now(UTC)
        since = data.get("since") or until - timedelta(days=DEFAULT_DAYS)
        if since >= until:
            raise ValidationError("Must be before until.", "since")
        if until - since > timedelta(days=MAX_DAYS):
            raise ValidationError(f"The window spans at most {MAX_DAYS} days.", "since")
        return {**data, "since": since, "until": until, "group_by": data.get("group_by")}
