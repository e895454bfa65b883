"""Handlers, one module per domain; importing this package registers every action."""

from . import incidents, users

__all__ = ["incidents", "users"]
