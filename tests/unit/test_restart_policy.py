"""Docker's restart-policy rules and back-off, as the agent's monitor applies them."""
from __future__ import annotations

from flotilla.agent.restart_policy import FIRST_DELAY, MAX_DELAY, Exited, next_delay, should_restart


def exited(policy: str, code: int = 1, count: int = 0, retries: int = 0, manual: bool = False) -> Exited:
    return Exited(policy=policy, max_retries=retries, exit_code=code, restart_count=count,
                  manually_stopped=manual, ran_for=0.0)


def test_no_never_restarts():
    assert not should_restart(exited("no"))


def test_on_failure_counts_retries_and_ignores_success():
    assert should_restart(exited("on-failure", code=1, count=0, retries=2))
    assert should_restart(exited("on-failure", code=1, count=1, retries=2))
    assert not should_restart(exited("on-failure", code=1, count=2, retries=2))
    assert not should_restart(exited("on-failure", code=0, count=0, retries=2))
    assert should_restart(exited("on-failure", code=1, count=50, retries=0))


def test_manual_stop_wins_until_the_daemon_restarts():
    assert should_restart(exited("always", code=0))
    assert not should_restart(exited("always", manual=True))
    assert should_restart(exited("always", manual=True), daemon_start=True)
    assert should_restart(exited("unless-stopped", code=0))
    assert not should_restart(exited("unless-stopped", manual=True), daemon_start=True)


def test_backoff_doubles_caps_and_resets_after_ten_seconds():
    assert next_delay(None, 0) == FIRST_DELAY
    assert next_delay(0.1, 1) == 0.2
    assert next_delay(0.4, 1) == 0.8
    assert next_delay(MAX_DELAY, 1) == MAX_DELAY
    assert next_delay(6.4, 10.0) == FIRST_DELAY
