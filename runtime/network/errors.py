"""Exceptions of the network library.

`flotilla.runtime.errors` (the runtime branch) had not landed when this package was written, so
the network layer defines its own small hierarchy. Every message is one line that says what to
fix; callers (the agent's API) map the classes to gRPC codes: NotFound -> NOT_FOUND,
Conflict -> ALREADY_EXISTS / FAILED_PRECONDITION, InvalidArgument -> INVALID_ARGUMENT.
"""
from __future__ import annotations


class NetworkError(Exception):
    """Base class of every error raised by flotilla.runtime.network."""


class NotFound(NetworkError):
    """A network, container or endpoint that the caller named does not exist."""


class Conflict(NetworkError):
    """The request clashes with existing state (name taken, port in use, containers attached)."""


class InvalidArgument(NetworkError):
    """The request itself is malformed (bad subnet, bad port spec, unknown option)."""
