"""Leader election on an etcd lease, and the registry of live managers.

Every manager holds one lease, kept alive by a thread of its own (`LeaseKeeper`). With it, it registers itself under
`<prefix>managers/<id>` (its remote address: what agents may fail over to) and campaigns for
`<prefix>leader`: a transaction creates the key, bound to the lease, only if it does not exist.
The key's create revision identifies this term of leadership; the store's leader guard compares
it on every reconciler write, so a manager that lost the lease can no longer write even before
its reconcilers have noticed.

A manager steps down (calls `on_lost`, which cancels the reconcilers) as soon as it cannot be
sure it still holds the lease: no successful keep-alive within 3/4 of the TTL. etcd expires the
lease only after the full TTL, so the old leader stops before a new one can be elected.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

import grpc
from aetcd import rpc

from . import metrics
from .store import Store
from .store.keys import prefix_end

log = logging.getLogger(__name__)

_CREATE = rpc.Compare.CompareTarget.Value("CREATE")
_EQUAL = rpc.Compare.CompareResult.Value("EQUAL")


class LeaseKeeper(threading.Thread):
    """Keeps one lease alive from its own thread, with a blocking gRPC channel of its own.

    Why a thread: the manager's event loop can be busy for seconds with a big reconciliation
    round; keep-alives sent from that loop would then be late and the lease would expire under
    a manager that is merely busy. The GIL still lets this thread run every few milliseconds.
    """

    def __init__(self, target: str, lease_id: int, ttl: int) -> None:
        super().__init__(name=f"lease-{lease_id:x}", daemon=True)
        self.target, self.lease_id, self.ttl = target, lease_id, ttl
        self.last_ok = time.monotonic()  # the lease was just granted
        self.expired = False
        self._halt = threading.Event()

    def run(self) -> None:
        channel = grpc.insecure_channel(self.target)
        stub = rpc.LeaseStub(channel)
        try:
            while not self._halt.is_set():
                sent = time.monotonic()
                try:
                    resp = next(stub.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(ID=self.lease_id)]), timeout=self.ttl / 2))
                    if resp.TTL <= 0:
                        self.expired = True
                        return
                    self.last_ok = sent  # etcd renewed it after `sent`: it lives until sent + TTL at least
                except (grpc.RpcError, StopIteration) as e:
                    log.debug("lease keep-alive failed: %s", e)
                self._halt.wait(self.ttl / 6)
        finally:
            channel.close()

    def stop(self) -> None:
        self._halt.set()


class LeaderElection:
    """Runs until cancelled: keeps the lease, the registration, and campaigns."""

    def __init__(self, store: Store, manager_id: str, addr: str, ttl: float = 5.0,
                 on_elected: Callable[[], Awaitable[None]] | None = None,
                 on_lost: Callable[[], Awaitable[None]] | None = None) -> None:
        if ttl < 2:
            raise ValueError("leader lease TTL must be at least 2 seconds (etcd leases have whole seconds)")
        self.store = store
        self.manager_id = manager_id
        self.addr = addr
        self.ttl = int(ttl)
        self.leader_key = f"{store.prefix}leader".encode()
        self.managers_prefix = f"{store.prefix}managers/".encode()
        self.is_leader = False
        self.leader_id = ""
        self._on_elected = on_elected
        self._on_lost = on_lost
        self._lease_id = 0

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._term()
                except asyncio.CancelledError:
                    raise
                except grpc.aio.AioRpcError as e:
                    log.warning("leader election: etcd unavailable (%s); retrying", e.code().name)
                await self._step_down()
                await asyncio.sleep(0.2)
        finally:
            await self._step_down()
            await self._revoke()

    async def _revoke(self) -> None:
        """Give the lease back on a clean stop, so another manager takes over at once."""
        if self._lease_id:
            try:
                await self.store.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=self._lease_id), timeout=2)
            except (grpc.aio.AioRpcError, AttributeError):
                pass
            self._lease_id = 0

    async def _term(self) -> None:
        """One lease: register, campaign, keep alive until the lease is lost."""
        grant = await self.store.lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=self.ttl), timeout=5)
        self._lease_id = grant.ID
        await self.store.kv.Put(rpc.PutRequest(key=self.managers_prefix + self.manager_id.encode(),
                                               value=self.addr.encode(), lease=grant.ID), timeout=5)
        keeper = LeaseKeeper(self.store.target, grant.ID, self.ttl)
        keeper.start()
        leader_gone = self.store.deletion_event(self.leader_key)
        try:
            while True:
                if keeper.expired:
                    log.warning("leader election: lease %x expired", grant.ID)
                    self._lease_id = 0
                    return
                if time.monotonic() - keeper.last_ok > self.ttl * 0.75:
                    log.warning("leader election: no keep-alive answer for %.1fs; giving up the lease", self.ttl * 0.75)
                    return
                if not self.is_leader:
                    await self._campaign()
                elif not await self._still_leader():
                    log.warning("leader key is gone or not ours any more; stepping down")
                    await self._step_down()
                try:  # a follower campaigns as soon as the leader key is deleted (lease expired)
                    await asyncio.wait_for(leader_gone.wait(), self.ttl / 6)
                except asyncio.TimeoutError:
                    pass
                leader_gone.clear()
        finally:
            keeper.stop()

    async def _campaign(self) -> None:
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=self.leader_key, value=self.manager_id.encode(), lease=self._lease_id))
        get = rpc.RequestOp(request_range=rpc.RangeRequest(key=self.leader_key))
        resp = await self.store.kv.Txn(rpc.TxnRequest(
            compare=[rpc.Compare(key=self.leader_key, target=_CREATE, result=_EQUAL, create_revision=0)],
            success=[put], failure=[get]), timeout=5)
        if resp.succeeded:
            self.store.set_leader_guard(self.leader_key, resp.header.revision)
            self.is_leader = True
            self.leader_id = self.manager_id
            metrics.LEADER.set(1)
            log.info("manager %s is the leader", self.manager_id)
            if self._on_elected is not None:
                await self._on_elected()
        else:
            kvs = resp.responses[0].response_range.kvs
            self.leader_id = kvs[0].value.decode() if kvs else ""

    async def _still_leader(self) -> bool:
        resp = await self.store.kv.Range(rpc.RangeRequest(key=self.leader_key), timeout=self.ttl / 2)
        return bool(resp.kvs) and resp.kvs[0].lease == self._lease_id

    async def _step_down(self) -> None:
        """Refuse guarded writes first, then stop the reconcilers."""
        self.store.set_leader_guard(None)
        if self.is_leader:
            self.is_leader = False
            metrics.LEADER.set(0)
            log.warning("manager %s is no longer the leader", self.manager_id)
            if self._on_lost is not None:
                await self._on_lost()

    async def managers(self) -> dict[str, str]:
        """Live managers (id -> remote address), from their lease-bound registrations."""
        resp = await self.store.kv.Range(rpc.RangeRequest(key=self.managers_prefix, range_end=prefix_end(self.managers_prefix)), timeout=5)
        return {kv.key[len(self.managers_prefix):].decode(): kv.value.decode() for kv in resp.kvs}
