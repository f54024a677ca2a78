"""Docker's restart-policy decision and back-off, as pure functions the monitor applies.

Kept apart from the monitor's asyncio plumbing so the rules can be read (and unit-tested)
on their own.
"""
from __future__ import annotations

from dataclasses import dataclass

FIRST_DELAY = 0.1      # Docker: 100 ms, doubling after each restart
MAX_DELAY = 60.0       # Docker caps the back-off at one minute
RESET_AFTER = 10.0     # a container that ran this long starts again from FIRST_DELAY


@dataclass(frozen=True)
class Exited:
    """What the monitor knows about a container that just stopped."""

    policy: str
    max_retries: int
    exit_code: int
    restart_count: int
    manually_stopped: bool
    ran_for: float


def should_restart(state: Exited, daemon_start: bool = False) -> bool:
    """Docker's rules. `daemon_start`: the agent itself is starting, which restarts `always`
    containers even if the user had stopped them (as dockerd does on start)."""
    if state.policy == "always":
        return daemon_start or not state.manually_stopped
    if state.manually_stopped:
        return False
    if state.policy == "unless-stopped":
        return True
    if state.policy == "on-failure":
        return state.exit_code != 0 and (state.max_retries == 0 or state.restart_count < state.max_retries)
    return False


def next_delay(previous: float | None, ran_for: float) -> float:
    """The wait before the next restart: 100 ms doubling, reset once a run lasted 10 s."""
    if previous is None or ran_for >= RESET_AFTER:
        return FIRST_DELAY
    return min(previous * 2, MAX_DELAY)
