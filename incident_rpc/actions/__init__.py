"""Handlers, one module per domain; importing this package registers every action."""

from incident_rpc.actions import (
    api_keys,
    bulk,
    comments,
    describe,
    incidents,
    silences,
    stats,
    user_admin,
    users,
)

__all__ = [
    "api_keys",
    "bulk",
    "comments",
    "describe",
    "incidents",
    "silences",
    "stats",
    "user_admin",
    "users",
]
