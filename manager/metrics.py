"""Prometheus metrics of the manager, in the process-wide default registry.

Every part of the manager (store, dispatcher, control API, reconcilers) records here or in its
own module against the same default registry, so `swarmd manager --metrics-addr` serves them
all from one endpoint. The scheduler's own histograms live in `scheduler/metrics.py`.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ETCD_LATENCY = Histogram(
    "flotilla_etcd_request_seconds",
    "Latency of etcd requests made by the store",
    ["op"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
STORE_BATCH_OPS = Histogram(
    "flotilla_store_batch_ops",
    "Operations in one store.batch call",
    buckets=(1, 10, 100, 1_000, 10_000, 100_000),
)
STORE_CONFLICTS = Counter("flotilla_store_conflicts", "Writes refused by compare-and-swap")
WATCH_RESTARTS = Counter("flotilla_store_watch_restarts", "Times the store's etcd watch was reopened")

TASKS = Gauge("flotilla_tasks", "Tasks by observed state", ["state"])
SERVICES = Gauge("flotilla_services", "Services")
NODES = Gauge("flotilla_nodes", "Nodes by state", ["state"])
LEADER = Gauge("flotilla_manager_leader", "1 while this manager holds the leader lease")

LOOP_LAG = Histogram(
    "flotilla_manager_loop_lag_seconds",
    "How late a 250 ms timer fires on the manager's event loop (time it was blocked)",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

SESSIONS = Gauge("flotilla_dispatcher_sessions", "Open agent sessions on this manager")
HEARTBEATS = Counter("flotilla_dispatcher_heartbeats", "Heartbeats received")
STATUS_UPDATES = Counter("flotilla_dispatcher_status_updates", "Task status updates received from agents")
STATUS_WRITES = Counter("flotilla_dispatcher_status_writes", "Task status updates written to etcd")
ASSIGNMENT_MESSAGES = Counter("flotilla_dispatcher_assignment_messages", "Assignments messages sent", ["type"])
CONTROL_REQUESTS = Counter("flotilla_control_requests", "Control API requests", ["method", "code"])
