"""`swarmctl service|task|node`: cluster commands, spoken to a manager's Control API.

Only argparse is imported here; gRPC and the generated messages are imported by the handlers,
so `swarmctl --help` and local commands stay fast.
"""
from __future__ import annotations

from .parsers import register

__all__ = ["register"]
