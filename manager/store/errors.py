"""The store's errors. The Control API maps each to one gRPC status code (see controlapi)."""
from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises."""


class NotFound(StoreError):
    """The object does not exist (or no longer does)."""


class Conflict(StoreError):
    """A compare-and-swap failed: the object changed since the caller read it."""


class InvalidArgument(StoreError):
    """The request cannot be served as asked (an ambiguous reference, an unknown kind)."""


class NotLeader(StoreError):
    """A leader-guarded write was refused: this manager does not hold the leader lease."""


class Unavailable(StoreError):
    """etcd cannot be reached; the write may be retried."""
