"""Errors of image distribution, added to the runtime's hierarchy (`flotilla.runtime.errors`).

The agent maps them like the runtime's own: `Unauthorized` -> UNAUTHENTICATED,
`RegistryError` -> UNAVAILABLE. Bad manifests, digests and references stay `InvalidArgument`,
missing images and tags `NotFound`.
"""
from __future__ import annotations

from ..errors import RuntimeFault


class Unauthorized(RuntimeFault):
    """The registry refused the credentials, or needs some and none are stored."""


class RegistryError(RuntimeFault):
    """The registry failed (5xx, connection errors after retries) or answered something unusable."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status
