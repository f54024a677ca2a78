"""`swarmctl task ...` handlers."""
from __future__ import annotations

from flotilla.proto import control_pb2 as cpb

from .format import table, to_json
from .service import TASK_HEADERS, task_rows


def ls(stub, args) -> int:
    req = cpb.ListTasksRequest()
    if args.service:
        req.service_ids.append(stub.GetService(cpb.GetServiceRequest(service_id=args.service)).service.id)
    if args.node:
        req.node_ids.append(stub.GetNode(cpb.GetNodeRequest(node_id=args.node)).node.id)
    tasks = stub.ListTasks(req).tasks
    if args.format == "json":
        print(to_json(tasks))
    else:
        table(TASK_HEADERS, task_rows(stub, tasks))
    return 0


def inspect(stub, args) -> int:
    print(to_json([stub.GetTask(cpb.GetTaskRequest(task_id=ref)).task for ref in args.tasks]))
    return 0
