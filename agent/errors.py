"""Map the runtime's exception hierarchy to gRPC status codes.

The runtime's `str(e)` is already the one line a user should read, so it travels unchanged as
the status details; the code tells a program what kind of failure it was. `StartFailed` also
carries Docker's exit code (125/126/127) in the trailing metadata key `exit-code`, so that
`swarmctl run` can exit with it.
"""
from __future__ import annotations

import grpc

from flotilla.runtime import errors
from flotilla.runtime.imaging.errors import RegistryError, Unauthorized

EXIT_CODE_KEY = "exit-code"
SOURCE_KEY = "error-source"  # "registry": an UNAVAILABLE that the registry caused, not the agent


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The status code, details and trailing metadata that report `exc` to a client."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, errors.NotFound):
        return grpc.StatusCode.NOT_FOUND, message, ()
    if isinstance(exc, errors.Conflict):
        in_use = "already in use" in message.lower()  # a name taken: the one conflict that is "exists"
        code = grpc.StatusCode.ALREADY_EXISTS if in_use else grpc.StatusCode.FAILED_PRECONDITION
        return code, message, ()
    if isinstance(exc, errors.InvalidArgument):
        return grpc.StatusCode.INVALID_ARGUMENT, message, ()
    if isinstance(exc, errors.Timeout):
        return grpc.StatusCode.DEADLINE_EXCEEDED, message, ()
    if isinstance(exc, errors.StartFailed):
        return grpc.StatusCode.FAILED_PRECONDITION, message, ((EXIT_CODE_KEY, str(exc.exit_code)),)
    if isinstance(exc, Unauthorized):
        return grpc.StatusCode.UNAUTHENTICATED, message, ()
    if isinstance(exc, RegistryError):  # UNAVAILABLE, marked so the CLI does not call the agent unreachable
        return grpc.StatusCode.UNAVAILABLE, message, ((SOURCE_KEY, "registry"),)
    if isinstance(exc, errors.RuntimeFault):
        return grpc.StatusCode.UNKNOWN, message, ()
    return grpc.StatusCode.INTERNAL, f"internal error: {message}", ()
