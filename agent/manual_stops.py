"""Remember which containers a user stopped, across agent restarts.

Docker does not restart an `unless-stopped` container (nor, until the daemon restarts, an
`always` one) after the user stopped it. The runtime only stores the policy; the decision is
the agent's, so the agent keeps this one bit per container as an empty marker file under
`<root>/agent/manual-stop/`, which survives a kill -9 of the agent.
"""
from __future__ import annotations

import os
from pathlib import Path


class ManualStops:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def mark(self, container_id: str) -> None:
        """Blocking (fsyncs the directory so the marker survives a crash): call it in a thread."""
        os.close(os.open(self._dir / container_id, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        dir_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def clear(self, container_id: str) -> None:
        (self._dir / container_id).unlink(missing_ok=True)

    def is_marked(self, container_id: str) -> bool:
        return (self._dir / container_id).exists()

    def forget_all_but(self, container_ids: set[str]) -> None:
        """Drop markers of containers that no longer exist (removed while the agent was down)."""
        for path in self._dir.iterdir():
            if path.name not in container_ids:
                path.unlink(missing_ok=True)
