"""The runtime's one exception hierarchy.

The agent maps each class to a gRPC status code, so the class says *what kind* of failure it
is and `str(e)` is the single line a user reads: it names the object and what to fix.
"""
from __future__ import annotations


class RuntimeFault(Exception):
    """Base of every error the runtime raises on purpose."""


class NotFound(RuntimeFault):
    """The named container, image, volume or path does not exist (gRPC NOT_FOUND)."""


class Conflict(RuntimeFault):
    """The request clashes with the current state: a name in use, a running container, an image in use."""


class InvalidArgument(RuntimeFault):
    """The request itself is malformed: bad memory string, missing bind source, bad restart policy."""


class StartFailed(RuntimeFault):
    """The container process could not be started; `exit_code` is what Docker reports (125/126/127)."""

    def __init__(self, message: str, exit_code: int = 125) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Timeout(RuntimeFault, TimeoutError):
    """A wait ran out of time (gRPC DEADLINE_EXCEEDED); the container is unchanged."""
