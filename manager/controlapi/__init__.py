"""The Control API (users' and programs' side of the manager)."""
from .server import Control

__all__ = ["Control"]
