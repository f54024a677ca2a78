"""Prometheus metrics of the agent, served on `--metrics-addr`.

Collected on scrape from the runtime (which reads the cgroups), so there is no sampling loop
and the numbers are always current. The HTTP server runs in prometheus_client's own thread;
the runtime is thread-safe, so a scrape never touches the event loop.
"""
from __future__ import annotations

import logging
from collections import Counter

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, CounterMetricFamily
from prometheus_client.registry import Collector

from flotilla.runtime import errors
from flotilla.runtime.runtime import Runtime

log = logging.getLogger("flotilla.agent.metrics")
STATES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")


class RuntimeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def collect(self):
        containers = self._rt.list(all=True)
        by_state = Counter(c.status for c in containers)
        states = GaugeMetricFamily("flotilla_containers", "Containers by state", labels=["state"])
        for state in STATES:
            states.add_metric([state], by_state.get(state, 0))
        yield states
        cpu = CounterMetricFamily("flotilla_container_cpu_usage_seconds", "CPU time used by the container",
                                  labels=["id", "name"])
        mem = GaugeMetricFamily("flotilla_container_memory_usage_bytes", "Memory charged to the container",
                                labels=["id", "name"])
        mem_limit = GaugeMetricFamily("flotilla_container_memory_limit_bytes", "Memory limit (0: none)",
                                      labels=["id", "name"])
        pids = GaugeMetricFamily("flotilla_container_pids", "Processes in the container", labels=["id", "name"])
        restarts = CounterMetricFamily("flotilla_container_restarts", "Restarts by the restart policy",
                                       labels=["id", "name"])
        for c in containers:
            labels = [c.id[:12], c.name]
            restarts.add_metric(labels, int(c.restart_count or 0))
            if c.status not in ("running", "paused"):
                continue
            try:
                raw = self._rt.stats(c.id)
            except errors.RuntimeFault:  # stopped between list and stats
                continue
            cpu.add_metric(labels, int(raw.get("cpu_usage_ns") or 0) / 1e9)
            mem.add_metric(labels, int(raw.get("memory_usage") or 0))
            mem_limit.add_metric(labels, int(raw.get("memory_limit") or 0))
            pids.add_metric(labels, int(raw.get("pids_current") or 0))
        yield from (cpu, mem, mem_limit, pids, restarts)


def serve_metrics(runtime: Runtime, address: str, cluster_agent=None):
    """Start the HTTP endpoint on `HOST:PORT`; returns the server so the caller can shut it down."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"invalid --metrics-addr {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9323")
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(runtime))
    if cluster_agent is not None:  # tasks, session and per-task usage (flotilla.agent.cluster_metrics)
        from .cluster_metrics import ClusterCollector
        registry.register(ClusterCollector(cluster_agent))
    server, _thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    return server
