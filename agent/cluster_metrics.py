"""Prometheus metrics of the agent's cluster side: tasks by state, session state, and per-task
container usage (CPU, memory, pids from the cgroups) labelled by service and task.

Collected on scrape like the runtime's metrics. The worker's table is read from the metrics
thread without a lock: a scrape sees a snapshot that may be one change old, never a torn value
(dict copies of small objects under the GIL).
"""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from flotilla.proto import objects_pb2 as pb
from flotilla.runtime import errors

from .task_container import LABEL_SERVICE_NAME, LABEL_TASK_ID, LABEL_TASK_NAME

TASK_STATES = [name for name, _ in sorted(pb.TaskState.items(), key=lambda kv: kv[1])]


class ClusterCollector(Collector):
    def __init__(self, agent) -> None:
        self._agent = agent

    def collect(self):
        agent = self._agent
        tasks = GaugeMetricFamily("flotilla_agent_tasks", "Tasks assigned to this node by the state the agent reached",
                                  labels=["state"])
        states = agent.worker.states()
        for name in TASK_STATES:
            tasks.add_metric([name.lower()], states.get(name, 0))
        yield tasks
        yield GaugeMetricFamily("flotilla_agent_session_connected", "1 while a session with a manager is up",
                                value=1 if agent.connected else 0)
        yield CounterMetricFamily("flotilla_agent_sessions", "Sessions opened with managers", value=agent.sessions)
        labels = ["service", "task", "name"]
        cpu = CounterMetricFamily("flotilla_task_cpu_usage_seconds", "CPU time used by the task's container", labels=labels)
        mem = GaugeMetricFamily("flotilla_task_memory_usage_bytes", "Memory charged to the task's container", labels=labels)
        pids = GaugeMetricFamily("flotilla_task_pids", "Processes in the task's container", labels=labels)
        for info in agent.runtime.list(all=False):
            task_id = info.spec.labels.get(LABEL_TASK_ID)
            if not task_id:
                continue
            try:
                raw = agent.runtime.stats(info.id)
            except errors.RuntimeFault:  # stopped between list and stats
                continue
            values = [info.spec.labels.get(LABEL_SERVICE_NAME, ""), task_id, info.spec.labels.get(LABEL_TASK_NAME, info.name)]
            cpu.add_metric(values, int(raw.get("cpu_usage_ns") or 0) / 1e9)
            mem.add_metric(values, int(raw.get("memory_usage") or 0))
            pids.add_metric(values, int(raw.get("pids_current") or 0))
        yield from (cpu, mem, pids)
