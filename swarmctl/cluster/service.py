"""`swarmctl service ...` handlers."""
from __future__ import annotations

import shlex

from flotilla.proto import control_pb2 as cpb
from flotilla.proto import objects_pb2 as pb

from .connect import ClusterError
from .format import ago, table, to_json
from .values import duration_ns, nano_cpus, network_attachment, pair, port_config, size

RESTART = {"any": pb.RestartPolicy.ANY, "on-failure": pb.RestartPolicy.ON_FAILURE, "none": pb.RestartPolicy.NONE}


def _resources(spec: pb.ServiceSpec, args) -> None:
    res = spec.task.resources
    if args.reserve_cpu is not None:
        res.reservations.nano_cpus = nano_cpus(args.reserve_cpu)
    if args.reserve_memory is not None:
        res.reservations.memory_bytes = size(args.reserve_memory)
    if args.limit_cpu is not None:
        res.limits.nano_cpus = nano_cpus(args.limit_cpu)
    if args.limit_memory is not None:
        res.limits.memory_bytes = size(args.limit_memory)


def create(stub, args) -> int:
    spec = pb.ServiceSpec()
    spec.annotations.name = args.name
    spec.annotations.labels.update(dict(pair(label, "label") for label in args.label))
    c = spec.task.container
    c.image = args.image
    c.args.extend(args.args)
    c.env.extend(args.env)
    if args.mode == "global":
        if args.replicas is not None:
            raise ClusterError("--replicas applies to replicated services only")
        getattr(spec, "global").SetInParent()
    else:
        if args.replicas is not None and args.replicas < 0:
            raise ClusterError(f"--replicas must not be negative, got {args.replicas}")
        spec.replicated.replicas = 1 if args.replicas is None else args.replicas
    spec.task.placement.constraints.extend(args.constraint)
    for pref in args.placement_pref:
        strategy, _, descriptor = pref.partition("=")
        if strategy != "spread" or not descriptor:
            raise ClusterError(f"invalid --placement-pref {pref!r}: use spread=node.labels.NAME")
        spec.task.placement.preferences.add(spread_descriptor=descriptor)
    spec.task.restart.condition = RESTART[args.restart_condition]
    if args.restart_delay is not None:
        spec.task.restart.delay.FromNanoseconds(duration_ns(args.restart_delay))
    if args.restart_max_attempts < 0:
        raise ClusterError("--restart-max-attempts must not be negative")
    spec.task.restart.max_attempts = args.restart_max_attempts
    if args.stop_grace_period is not None:
        c.stop_grace_period.FromNanoseconds(duration_ns(args.stop_grace_period))
    c.init = args.init
    for text in args.network:
        spec.task.networks.append(network_attachment(text))
    for text in args.publish:
        spec.task.endpoint.ports.append(port_config(text))
    _resources(spec, args)
    print(stub.CreateService(cpb.CreateServiceRequest(spec=spec)).service.id)
    return 0


def _find(stub, ref: str) -> pb.Service:
    return stub.GetService(cpb.GetServiceRequest(service_id=ref)).service


def _mode(s: pb.Service) -> str:
    return "global" if s.spec.WhichOneof("mode") == "global" else "replicated"


def ls(stub, args) -> int:
    services = sorted(stub.ListServices(cpb.ListServicesRequest()).services, key=lambda s: s.spec.annotations.name)
    if args.format == "json":
        print(to_json(services))
        return 0
    tasks = stub.ListTasks(cpb.ListTasksRequest(desired_states=[pb.RUNNING])).tasks
    running: dict[str, int] = {}
    desired: dict[str, int] = {}
    for t in tasks:
        desired[t.service_id] = desired.get(t.service_id, 0) + 1
        if t.status.state == pb.RUNNING:
            running[t.service_id] = running.get(t.service_id, 0) + 1
    rows = []
    for s in services:
        want = s.spec.replicated.replicas if _mode(s) == "replicated" else desired.get(s.id, 0)
        rows.append([s.id[:12], s.spec.annotations.name, _mode(s), f"{running.get(s.id, 0)}/{want}", s.spec.task.container.image])
    table(["ID", "NAME", "MODE", "REPLICAS", "IMAGE"], rows)
    return 0


def inspect(stub, args) -> int:
    print(to_json([_find(stub, ref) for ref in args.services]))
    return 0


def task_rows(stub, tasks) -> list[list[str]]:
    """Rows of `service ps` / `task ls`, Docker's columns."""
    nodes = {n.id: n.description.hostname or n.id[:12] for n in stub.ListNodes(cpb.ListNodesRequest()).nodes}
    services = {s.id: s.spec.annotations.name for s in stub.ListServices(cpb.ListServicesRequest()).services}
    rows = []
    for t in sorted(tasks, key=lambda t: (t.service_id, t.slot, -t.meta.created_at.seconds)):
        name = t.annotations.name or f"{services.get(t.service_id, t.service_id[:12])}.{t.slot or t.node_id[:12]}"
        state = pb.TaskState.Name(t.status.state).capitalize()
        rows.append([t.id[:12], name, t.spec.container.image, nodes.get(t.node_id, t.node_id[:12]),
                     pb.TaskState.Name(t.desired_state).capitalize(), f"{state} {ago(t.status.timestamp)}".strip(),
                     t.status.err])
    return rows


TASK_HEADERS = ["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"]


def ps(stub, args) -> int:
    ids = [_find(stub, ref).id for ref in args.services]
    tasks = stub.ListTasks(cpb.ListTasksRequest(service_ids=ids)).tasks
    if args.format == "json":
        print(to_json(tasks))
    else:
        table(TASK_HEADERS, task_rows(stub, tasks))
    return 0


def _update(stub, ref: str, change) -> pb.Service:
    """Read, change, write; a concurrent change (out of sequence) is retried on a fresh read."""
    import grpc

    for attempt in range(3):
        current = _find(stub, ref)
        spec = pb.ServiceSpec()
        spec.CopyFrom(current.spec)
        change(spec)
        try:
            return stub.UpdateService(cpb.UpdateServiceRequest(service_id=current.id, service_version=current.meta.version, spec=spec)).service
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ABORTED or attempt == 2:
                raise
    raise AssertionError("unreachable")


def scale(stub, args) -> int:
    wanted = []
    for item in args.scales:
        name, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise ClusterError(f"invalid scale {item!r}: use SERVICE=REPLICAS, e.g. web=3")
        wanted.append((name, int(count)))
    for name, count in wanted:
        if _mode(_find(stub, name)) == "global":
            raise ClusterError(f"{name}: scale can only be used with replicated services")
        _update(stub, name, lambda spec, n=count: setattr(spec.replicated, "replicas", n))
        print(f"{name} scaled to {count}")
    return 0


def update(stub, args) -> int:
    removed = set(args.env_rm)
    added = [pair(e, "environment variable") for e in args.env_add]
    new_args = shlex.split(args.args) if args.args is not None else None
    if args.replicas is not None and args.replicas < 0:
        raise ClusterError(f"--replicas must not be negative, got {args.replicas}")
    networks_added = [network_attachment(text) for text in args.network_add]
    networks_removed = {stub.GetNetwork(cpb.GetNetworkRequest(network_id=ref)).network.id for ref in args.network_rm}

    def change(spec: pb.ServiceSpec) -> None:
        c = spec.task.container
        if args.image:
            c.image = args.image
        if removed or added:
            names = removed | {k for k, _ in added}
            env = [e for e in c.env if e.partition("=")[0] not in names] + [f"{k}={v}" for k, v in added]
            del c.env[:]
            c.env.extend(env)
        if new_args is not None:
            del c.args[:]
            c.args.extend(new_args)
        if args.init is not None:
            c.init = args.init
        if args.replicas is not None:
            if spec.WhichOneof("mode") != "replicated":
                raise ClusterError("--replicas applies to replicated services only")
            spec.replicated.replicas = args.replicas
        if networks_added or networks_removed:
            kept = [a for a in spec.task.networks if a.target not in networks_removed]
            del spec.task.networks[:]
            spec.task.networks.extend(kept + networks_added)
        _resources(spec, args)

    print(_update(stub, args.service, change).spec.annotations.name)
    return 0


def rm(stub, args) -> int:
    for ref in args.services:
        stub.RemoveService(cpb.RemoveServiceRequest(service_id=ref))
        print(ref)
    return 0
