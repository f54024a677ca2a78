"""The log broker: `service logs` gathered from the agents that run the tasks (see broker.py)."""
from .broker import LogBroker, task_display_name

__all__ = ["LogBroker", "task_display_name"]
