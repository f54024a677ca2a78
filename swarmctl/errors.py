"""The CLI's one error type and how a failed RPC becomes one line on stderr."""
from __future__ import annotations


class CLIError(Exception):
    """A failure reported as one line on stderr with a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def from_rpc_error(err, host: str, default_exit: int = 1) -> CLIError:
    """Docker's wording: daemon errors are prefixed, an unreachable agent says how to fix it.

    `err` is a grpc.RpcError or the CLI socket's CallError: both have code() (compared by name),
    details() and trailing_metadata()."""
    code = err.code().name
    from_registry = ("error-source", "registry") in tuple(err.trailing_metadata() or ())
    if code == "UNAVAILABLE" and not from_registry:
        return CLIError(f"Cannot connect to the Flotilla agent at {host}. Is the agent running?", 1)
    if code == "CANCELLED":
        return CLIError("request cancelled", 1)
    exit_code = default_exit
    for key, value in err.trailing_metadata() or ():
        if key == "exit-code" and value.isdigit():
            exit_code = int(value)
    return CLIError(f"Error response from daemon: {err.details()}", exit_code)
