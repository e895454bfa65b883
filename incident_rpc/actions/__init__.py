"""Handlers, one module per domain; importing this package registers every action."""

from . import bulk, describe, incidents, users

__all__ = ["bulk", "describe", "incidents", "users"]
