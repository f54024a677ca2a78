"""The Dispatcher API (agents' side of the manager): sessions, heartbeats, assignments, statuses."""
from .dispatcher import Dispatcher

__all__ = ["Dispatcher"]
