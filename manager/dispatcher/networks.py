"""What a task sent to an agent carries about its networks.

SwarmKit sends Network objects to agents as assignments of their own and tracks which node
knows which network. Here the dispatcher copies the few networks a task uses into the task
it sends (`Task.networks`), from the store's cache, at the moment it is sent: the agent gets
everything it needs to build them in one message, there is no second kind of assignment to
keep in step, and nothing is written to etcd (a network's spec never changes after creation,
so the copy cannot go stale). Tasks without networks are sent untouched, at no cost.
"""
from __future__ import annotations

from flotilla.proto import objects_pb2 as pb

from ..store import Store


def attach_networks(task: pb.Task, store: Store) -> None:
    """Fill `task.networks` (a message about to be sent) from `task.spec.networks`.

    A network missing from the store (removed while an old task still ran) is left out; the
    agent rejects a task whose networks it cannot build, with the network's id in the message.
    """
    if not task.spec.networks:
        return
    service = task.service_annotations.name or task.service_id
    del task.networks[:]
    for config in task.spec.networks:
        network = store.get("network", config.target)
        if network is None:
            continue
        aliases = [service, f"tasks.{service}"]
        aliases += [a for a in config.aliases if a not in aliases]
        task.networks.add(network=network, aliases=aliases)
