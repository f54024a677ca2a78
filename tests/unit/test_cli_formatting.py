"""Docker's output formats: durations, sizes, ps status lines and tables."""
from __future__ import annotations

from flotilla.swarmctl.formatting import (bytes_size, container_status, human_duration, human_size, quoted_command,
                                          short_id, table)


def test_human_duration_matches_docker():
    assert human_duration(0.4) == "Less than a second"
    assert human_duration(1) == "1 second"
    assert human_duration(59) == "59 seconds"
    assert human_duration(61) == "About a minute"
    assert human_duration(600) == "10 minutes"
    assert human_duration(3600) == "About an hour"
    assert human_duration(5 * 3600) == "5 hours"
    assert human_duration(3 * 86400) == "3 days"
    assert human_duration(20 * 86400) == "2 weeks"


def test_sizes():
    assert human_size(4_270_000) == "4.27MB"
    assert human_size(999) == "999B"
    assert bytes_size(1536 * 1024) == "1.5MiB"


def test_ps_status_column():
    now = 1000.0
    assert container_status("running", 0, 990, 0, now) == "Up 10 seconds"
    assert container_status("paused", 0, 990, 0, now) == "Up 10 seconds (Paused)"
    assert container_status("exited", 3, 900, 995, now) == "Exited (3) 5 seconds ago"
    assert container_status("created", 0, 0, 0, now) == "Created"


def test_command_column_is_quoted_and_truncated():
    assert quoted_command("sleep 100", True) == '"sleep 100"'
    assert quoted_command("sh -c 'while true; do sleep 1; done'", True) == '"sh -c \'while true; …"'
    assert quoted_command("sh -c 'while true; do sleep 1; done'", False).endswith('done\'"')


def test_table_pads_columns_by_three_spaces():
    out = table(["CONTAINER ID", "NAMES"], [["abc", "web"]])
    assert out.splitlines() == ["CONTAINER ID   NAMES", "abc            web"]
    assert short_id("sha256:" + "a" * 64) == "a" * 12
