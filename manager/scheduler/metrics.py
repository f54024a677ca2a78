"""Prometheus metrics of the scheduler (served with the manager's other metrics)."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

SCHEDULING_LATENCY = Histogram(
    "flotilla_scheduler_task_latency_seconds",
    "Time from a task becoming PENDING to the scheduler assigning it",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
SCHEDULING_BATCH = Histogram(
    "flotilla_scheduler_batch_tasks",
    "Tasks considered in one scheduling round",
    buckets=(1, 10, 100, 1_000, 5_000, 10_000, 20_000, 50_000, 100_000),
)
SCHEDULING_ROUND = Histogram(
    "flotilla_scheduler_round_seconds",
    "Time of one scheduling round: deciding and writing its batch",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCHEDULING_DECISIONS = Counter("flotilla_scheduler_assigned_tasks", "Tasks assigned to a node")
