"""The Store: cluster state in etcd, read from an in-memory cache kept current by a watch.

Why this shape: reconcilers and the dispatcher read the whole cluster many times a second, so
reads never go to etcd. Writes are etcd transactions that compare each key's mod_revision (the
object's version) so two writers can never silently overwrite each other, and many writes are
packed into few transactions because etcd's cost is per request (raft round + fsync).

The etcd API is spoken through the generated stubs that `aetcd` ships (`aetcd.rpc`) on a
channel of our own: `aetcd.Client` takes a single endpoint and hides the paginated, revision
pinned range and the raw watch stream that a resumable cache needs.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from aetcd import rpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from .. import metrics
from .cache import Cache
from .errors import Conflict, InvalidArgument, NotFound, NotLeader, StoreError, Unavailable
from .keys import KINDS, object_key, prefix_end, split_key

log = logging.getLogger(__name__)

MAX_TXN_OPS = 127          # etcd's default --max-txn-ops is 128; one compare is kept for the leader guard
MAX_TXN_BYTES = 1_400_000  # etcd's default --max-request-bytes is 1.5 MiB; leave room for framing
PREPARE_SLICE = 1_016       # ops serialized between two yields to the event loop (8 full transactions)
LOAD_PAGE = 5_000          # keys per range request when loading the cache
TXN_CONCURRENCY = 32       # transactions of one batch in flight at once (etcd groups their fsyncs)
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}

_MOD = rpc.Compare.CompareTarget.Value("MOD")
_CREATE = rpc.Compare.CompareTarget.Value("CREATE")
_EQUAL = rpc.Compare.CompareResult.Value("EQUAL")
_GREATER = rpc.Compare.CompareResult.Value("GREATER")


@dataclass
class Op:
    """One write of a batch. `obj` is the object (create, update, delete with CAS) or an id
    (delete of whatever version is current)."""

    action: str
    kind: str
    obj: Message | str


@dataclass
class Event:
    """A change the cache saw. For deletes `obj` is the last known object and `old` too."""

    kind: str
    action: str
    obj: Message
    old: Message | None


def new_id() -> str:
    """A random 25-character id, like SwarmKit's."""
    return os.urandom(13).hex()[:25]


def name_of(kind: str, obj: Message) -> str:
    """The human name of an object, as `find` matches it."""
    if kind == "task":
        return obj.annotations.name
    if kind == "node":
        return obj.spec.annotations.name or obj.description.hostname
    return obj.spec.annotations.name


def endpoint_target(endpoints: list[str]) -> str:
    """A gRPC target for etcd endpoints such as `http://127.0.0.1:2379` (several: failover)."""
    hostports = []
    for ep in endpoints:
        ep = ep.strip()
        for scheme in ("http://", "https://"):
            if ep.startswith(scheme):
                ep = ep[len(scheme):]
        ep = ep.rstrip("/")
        if not ep or ":" not in ep:
            raise InvalidArgument(f"etcd endpoint {ep!r}: expected http://HOST:PORT")
        hostports.append(ep)
    if not hostports:
        raise InvalidArgument("no etcd endpoint given: pass --etcd-endpoints http://HOST:PORT")
    if len(hostports) == 1:
        return hostports[0]
    return "ipv4:" + ",".join(hostports)


class _Prepared:
    """An op turned into etcd request parts."""

    __slots__ = ("index", "op", "key", "kind", "obj", "expect", "request", "size")

    def __init__(self, index: int, op: Op, key: bytes, obj: Message | None, expect: int | None, request, size: int) -> None:
        self.index, self.op, self.key, self.kind, self.obj = index, op, key, op.kind, obj
        self.expect, self.request, self.size = expect, request, size


class Store:
    """See the module docstring and docs/manager.md."""

    def __init__(self, endpoints: list[str], prefix: str = "/flotilla/v1/", *, timeout: float = 10.0) -> None:
        if not prefix.endswith("/"):
            raise InvalidArgument(f"store prefix {prefix!r} must end with '/'")
        self.endpoints = list(endpoints)
        self.prefix = prefix
        self._pfx = prefix.encode()
        self.target = endpoint_target(self.endpoints)  # the gRPC target, for other channels to etcd
        self._timeout = timeout
        self._cache = Cache()
        self._revision = 0  # every change up to here is in the cache (load or watch)
        self._tombstones: dict[bytes, int] = {}  # keys deleted by us: revision of the delete
        self._tomb_heap: list[tuple[int, bytes]] = []
        self._subscribers: list[tuple[set[str] | None, asyncio.Queue]] = []
        self._guard: tuple[bytes, int] | None = None
        self._channel: grpc.aio.Channel | None = None
        self.kv = self.lease = self._watch_stub = None
        self._watch_task: asyncio.Task | None = None
        self._deletion_events: dict[bytes, asyncio.Event] = {}
        self.watch_connected = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, load every object, then follow changes from the loaded revision."""
        self._channel = grpc.aio.insecure_channel(self.target, options=[
            ("grpc.max_receive_message_length", 512 << 20),
            ("grpc.max_send_message_length", 16 << 20),
            ("grpc.keepalive_time_ms", 5_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1_000),
        ])
        self.kv = rpc.KVStub(self._channel)
        self.lease = rpc.LeaseStub(self._channel)
        self._watch_stub = rpc.WatchStub(self._channel)
        try:
            await self._resync()
        except grpc.aio.AioRpcError as e:
            await self.close()
            raise Unavailable(f"etcd at {', '.join(self.endpoints)} is not reachable: {e.details()}") from None
        self._watch_task = asyncio.create_task(self._watch_loop(), name="store-watch")

    async def close(self) -> None:
        """Stop watching and close the connection; the cache stays readable."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            try:
                await self._watch_task
            except asyncio.CancelledError:
                pass
            self._watch_task = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    @property
    def revision(self) -> int:
        """The etcd revision up to which the cache is known to be complete."""
        return self._revision

    # -- reads (cache only) -------------------------------------------------------------------

    def get(self, kind: str, obj_id: str) -> Message | None:
        return self._objects(kind).get(obj_id)

    def list(self, kind: str) -> list[Message]:
        return list(self._objects(kind).values())

    def count(self, kind: str) -> int:
        return len(self._objects(kind))

    def tasks_of_service(self, service_id: str) -> list[Message]:
        return list(self._cache.by_service.get(service_id, {}).values())

    def task_state_counts(self) -> dict[int, int]:
        """How many cached tasks are in each status state (kept as the cache changes)."""
        return {state: n for state, n in self._cache.task_states.items() if n}

    def tasks_of_node(self, node_id: str) -> list[Message]:
        return list(self._cache.by_node.get(node_id, {}).values())

    def find(self, kind: str, ref: str) -> Message:
        """An object by id, exact name, or unique id prefix (in that order, as Docker does)."""
        objects = self._objects(kind)
        if not ref:
            raise InvalidArgument(f"no {kind} given: pass an id or a name")
        obj = objects.get(ref)
        if obj is not None:
            return obj
        named = [o for o in objects.values() if name_of(kind, o) == ref]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise InvalidArgument(f"{kind} name {ref!r} is ambiguous ({len(named)} match): use an id")
        prefixed = [o for o in objects.values() if o.id.startswith(ref)]
        if len(prefixed) == 1:
            return prefixed[0]
        if len(prefixed) > 1:
            raise InvalidArgument(f"{kind} id prefix {ref!r} is ambiguous ({len(prefixed)} match): give more characters")
        raise NotFound(f"no such {kind}: {ref}")

    def _objects(self, kind: str) -> dict[str, Message]:
        try:
            return self._cache.objects[kind]
        except KeyError:
            raise InvalidArgument(f"unknown kind {kind!r}: one of {', '.join(KINDS)}") from None

    # -- events -------------------------------------------------------------------------------

    def subscribe(self, kinds: set[str] | None = None) -> asyncio.Queue:
        """A queue that receives an Event for every change the cache sees from now on."""
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers.append((set(kinds) if kinds else None, queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers = [(k, q) for k, q in self._subscribers if q is not queue]

    def _emit(self, kind: str, action: str, obj: Message, old: Message | None) -> None:
        if not self._subscribers:
            return
        event = Event(kind, action, obj, old)
        for kinds, queue in self._subscribers:
            if kinds is None or kind in kinds:
                queue.put_nowait(event)

    def deletion_event(self, key: bytes) -> asyncio.Event:
        """An event set whenever the watch sees `key` (under the prefix, not an object: the
        leader key) deleted; the caller clears it. Lets followers campaign at once."""
        return self._deletion_events.setdefault(key, asyncio.Event())

    # -- leader guard -------------------------------------------------------------------------

    def set_leader_guard(self, key: bytes | None, create_revision: int = 0) -> None:
        """Guarded writes succeed only while `key` exists with this create revision (our lease
        holds it). None: refuse every guarded write (leadership lost or never held)."""
        self._guard = (key, create_revision) if key is not None else None

    # -- writes -------------------------------------------------------------------------------

    async def create(self, kind: str, obj: Message) -> Message:
        return self._one(await self.batch([Op("create", kind, obj)]))

    async def update(self, kind: str, obj: Message) -> Message:
        return self._one(await self.batch([Op("update", kind, obj)]))

    async def delete(self, kind: str, obj_id: str, version: int | None = None) -> None:
        if version is None:
            self._one(await self.batch([Op("delete", kind, obj_id)]))
            return
        obj = KINDS[kind](id=obj_id)
        obj.meta.version.index = version
        self._one(await self.batch([Op("delete", kind, obj)]))

    @staticmethod
    def _one(results: list) -> Message:
        if isinstance(results[0], Exception):
            raise results[0]
        return results[0]

    async def batch(self, ops: list[Op], leader_guard: bool = False) -> list[Message | Exception | None]:
        """Apply `ops`, each compare-and-swapped, in as few transactions as etcd allows.

        Returns per op the stored object (None for a delete) or the exception that refused it;
        a refused op never stops the others.
        """
        metrics.STORE_BATCH_OPS.observe(len(ops))
        results: list = [None] * len(ops)
        guard = self._guard if leader_guard else None
        now = Timestamp()
        now.GetCurrentTime()  # one clock read per batch: a batch is one logical change
        # Several ops on one key must commit in their order: then the transactions run one by one.
        sem = asyncio.Semaphore(1 if self._repeats_a_key(ops) else TXN_CONCURRENCY)
        running: list[asyncio.Task] = []

        async def run(chunk: list[_Prepared]) -> None:
            async with sem:
                await self._commit(chunk, guard, results)

        prepared: list[_Prepared] = []
        for i, op in enumerate(ops):
            if leader_guard and guard is None:
                results[i] = NotLeader("this manager is not the leader")
                continue
            try:
                prepared.append(self._prepare(i, op, now))
            except StoreError as e:
                results[i] = e
            if len(prepared) >= PREPARE_SLICE:
                # Serializing a big batch takes a while: hand each slice to etcd and let the
                # event loop run (the gRPC server accepts one new call per loop iteration).
                running += [asyncio.create_task(run(c)) for c in self._chunks(prepared)]
                prepared = []
                await asyncio.sleep(0)
        running += [asyncio.create_task(run(c)) for c in self._chunks(prepared)]
        if running:
            await asyncio.gather(*running)
        return results

    @staticmethod
    def _repeats_a_key(ops: list[Op]) -> bool:
        seen: set[tuple[str, str]] = set()
        for op in ops:
            obj_id = op.obj if isinstance(op.obj, str) else op.obj.id
            if not obj_id:
                continue  # a create without id gets a fresh one
            if (op.kind, obj_id) in seen:
                return True
            seen.add((op.kind, obj_id))
        return False

    def _prepare(self, index: int, op: Op, now: Timestamp) -> _Prepared:
        cls = KINDS.get(op.kind)
        if cls is None:
            raise InvalidArgument(f"unknown kind {op.kind!r}")
        if op.action == "delete":
            if isinstance(op.obj, str):
                key = object_key(self.prefix, op.kind, op.obj)
                return _Prepared(index, op, key, None, None, rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key)), len(key) + 8)
            key = object_key(self.prefix, op.kind, op.obj.id)
            return _Prepared(index, op, key, None, op.obj.meta.version.index,
                             rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key)), len(key) + 8)
        if op.action not in ("create", "update"):
            raise InvalidArgument(f"unknown store action {op.action!r}")
        if not isinstance(op.obj, cls):
            raise InvalidArgument(f"{op.action} {op.kind}: expected a {cls.__name__}")
        obj = cls()
        obj.CopyFrom(op.obj)
        if op.action == "create":
            if not obj.id:
                obj.id = new_id()
            expect = 0
            obj.meta.created_at.CopyFrom(now)
            obj.meta.updated_at.CopyFrom(now)
        else:
            if not obj.id:
                raise InvalidArgument(f"update {op.kind}: the object has no id")
            expect = obj.meta.version.index
            obj.meta.updated_at.CopyFrom(now)
        obj.meta.version.index = 0  # the version is the key's mod_revision, not part of the value
        value = obj.SerializeToString()
        key = object_key(self.prefix, op.kind, obj.id)
        return _Prepared(index, op, key, obj, expect, rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value)),
                         len(key) + len(value) + 16)

    @staticmethod
    def _chunks(prepared: list[_Prepared]) -> Iterable[list[_Prepared]]:
        """Split into transactions within etcd's limits; a key appears once per transaction."""
        chunk: list[_Prepared] = []
        keys: set[bytes] = set()
        size = 0
        for p in prepared:
            if chunk and (len(chunk) >= MAX_TXN_OPS or size + p.size > MAX_TXN_BYTES or p.key in keys):
                yield chunk
                chunk, keys, size = [], set(), 0
            chunk.append(p)
            keys.add(p.key)
            size += p.size
        if chunk:
            yield chunk

    async def _commit(self, chunk: list[_Prepared], guard: tuple[bytes, int] | None, results: list) -> None:
        """Run one transaction; on a failed compare, drop the ops that conflict and retry."""
        with_failure_reads = False  # the reads that name the conflicting keys cost ~5 % of a batch: only after a failure
        while chunk:
            compare = []
            for p in chunk:
                if p.expect is None:
                    compare.append(rpc.Compare(key=p.key, target=_MOD, result=_GREATER, mod_revision=0))
                else:
                    compare.append(rpc.Compare(key=p.key, target=_MOD, result=_EQUAL, mod_revision=p.expect))
            failure = []
            if with_failure_reads:
                failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=p.key, keys_only=True)) for p in chunk]
            if guard is not None:
                compare.append(rpc.Compare(key=guard[0], target=_CREATE, result=_EQUAL, create_revision=guard[1]))
                if with_failure_reads:
                    failure.append(rpc.RequestOp(request_range=rpc.RangeRequest(key=guard[0], keys_only=True)))
            request = rpc.TxnRequest(compare=compare, success=[p.request for p in chunk], failure=failure)
            started = time.perf_counter()
            try:
                resp = await self.kv.Txn(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as e:
                err: StoreError
                if e.code() in _UNAVAILABLE:
                    err = Unavailable(f"etcd unavailable: {e.details()}")
                else:
                    err = StoreError(f"etcd refused the transaction: {e.details()}")
                for p in chunk:
                    results[p.index] = err
                return
            finally:
                metrics.ETCD_LATENCY.labels("txn").observe(time.perf_counter() - started)
            if not resp.succeeded and not with_failure_reads:
                with_failure_reads = True  # run it again, now learning which keys conflict
                continue
            if resp.succeeded:
                self._applied(chunk, resp.header.revision, results)
                return
            current = [r.response_range.kvs[0].mod_revision if r.response_range.kvs else 0 for r in resp.responses]
            if guard is not None:
                kvs = resp.responses[-1].response_range.kvs
                if not kvs or kvs[0].create_revision != guard[1]:
                    for p in chunk:
                        results[p.index] = NotLeader("this manager lost the leader lease")
                    return
            retry = []
            for p, mod in zip(chunk, current):
                ok = mod > 0 if p.expect is None else mod == p.expect
                if ok:
                    retry.append(p)
                    continue
                metrics.STORE_CONFLICTS.inc()
                what = f"{p.kind} {p.key.rsplit(b'/', 1)[-1].decode()}"
                if p.expect == 0:
                    results[p.index] = Conflict(f"{what} already exists")
                elif mod == 0:
                    results[p.index] = NotFound(f"{what} does not exist")
                else:
                    results[p.index] = Conflict(f"{what}: update out of sequence (version {p.expect}, current {mod})")
            if len(retry) == len(chunk):  # cannot happen unless etcd is inconsistent; do not spin
                for p in chunk:
                    results[p.index] = Conflict("transaction failed without a conflicting key")
                return
            chunk = retry

    def _applied(self, chunk: list[_Prepared], revision: int, results: list) -> None:
        """Reflect a committed transaction in the cache (before the caller sees the result)."""
        for p in chunk:
            kind_id = split_key(self._pfx, p.key)
            if p.obj is None:
                self._apply_delete(p.kind, p.key, kind_id[1], revision)
                self._tombstones[p.key] = revision
                heapq.heappush(self._tomb_heap, (revision, p.key))
                results[p.index] = None
            else:
                p.obj.meta.version.index = revision
                self._apply_put(p.kind, p.key, p.obj, revision)
                cached = self._cache.get(p.kind, p.obj.id)
                # The watch may have delivered this very write first: return the cached object.
                results[p.index] = cached if cached is not None and cached.meta.version.index == revision else p.obj

    # -- cache maintenance ----------------------------------------------------------------------

    def _apply_put(self, kind: str, key: bytes, obj_or_value: Message | bytes, revision: int) -> None:
        cached = self._cache.get(kind, key[len(self._pfx) + len(kind) + 1:].decode())
        if cached is not None and cached.meta.version.index >= revision:
            return  # our own write coming back from the watch, or an older change
        tomb = self._tombstones.get(key)
        if tomb is not None and tomb >= revision:
            return  # we deleted it after this change
        if isinstance(obj_or_value, bytes):
            obj = KINDS[kind]()
            obj.ParseFromString(obj_or_value)
            obj.meta.version.index = revision
        else:
            obj = obj_or_value
        old = self._cache.put(kind, obj)
        self._emit(kind, "create" if old is None else "update", obj, old)

    def _apply_delete(self, kind: str, key: bytes, obj_id: str, revision: int) -> None:
        cached = self._cache.get(kind, obj_id)
        if cached is None or cached.meta.version.index >= revision:
            return
        self._cache.remove(kind, obj_id)
        self._emit(kind, "delete", cached, cached)

    def _advance(self, revision: int) -> None:
        if revision > self._revision:
            self._revision = revision
        heap = self._tomb_heap
        while heap and heap[0][0] <= self._revision:
            rev, key = heapq.heappop(heap)
            if self._tombstones.get(key) == rev:
                del self._tombstones[key]

    async def _resync(self) -> None:
        """Load every object at one revision and make the cache equal to it (start, or after
        the watch's revision was compacted away)."""
        end = prefix_end(self._pfx)
        key, revision = self._pfx, 0
        seen: dict[str, set[str]] = {kind: set() for kind in KINDS}
        while True:
            started = time.perf_counter()
            resp = await self.kv.Range(rpc.RangeRequest(key=key, range_end=end, limit=LOAD_PAGE, revision=revision), timeout=max(self._timeout, 60))
            metrics.ETCD_LATENCY.labels("range").observe(time.perf_counter() - started)
            if revision == 0:
                revision = resp.header.revision
            for kv in resp.kvs:
                kind_id = split_key(self._pfx, kv.key)
                if kind_id is None:
                    continue
                seen[kind_id[0]].add(kind_id[1])
                cached = self._cache.get(*kind_id)
                if cached is None or cached.meta.version.index != kv.mod_revision:
                    obj = KINDS[kind_id[0]]()
                    obj.ParseFromString(kv.value)
                    obj.meta.version.index = kv.mod_revision
                    old = self._cache.put(kind_id[0], obj)
                    self._emit(kind_id[0], "create" if old is None else "update", obj, old)
            if not resp.more or not resp.kvs:
                break
            key = resp.kvs[-1].key + b"\0"
        for kind, ids in seen.items():
            for obj_id in [i for i in self._cache.objects[kind] if i not in ids]:
                old = self._cache.remove(kind, obj_id)
                self._emit(kind, "delete", old, old)
        self._revision = revision
        self._advance(revision)

    async def _watch_loop(self) -> None:
        """Follow changes forever; after a disconnect resume from the last revision seen."""
        backoff = 0.05
        while True:
            try:
                await self._watch_once()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                log.info("store: etcd watch interrupted (%s); resuming from revision %d", e.code().name, self._revision + 1)
            except Exception:  # noqa: BLE001 - the watch must survive anything and retry
                log.exception("store: watch failed; resuming from revision %d", self._revision + 1)
            self.watch_connected.clear()
            metrics.WATCH_RESTARTS.inc()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _watch_once(self) -> None:
        call = self._watch_stub.Watch()
        try:
            await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                key=self._pfx, range_end=prefix_end(self._pfx), start_revision=self._revision + 1, progress_notify=True)))
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    return
                if resp.compact_revision:
                    log.warning("store: revision %d compacted; reloading everything", self._revision + 1)
                    await self._resync()
                    return
                if resp.canceled:
                    raise StoreError(f"etcd cancelled the watch: {resp.cancel_reason}")
                if resp.created:
                    self.watch_connected.set()
                if resp.events:
                    self._on_events(resp.events)
                elif not resp.created:
                    self._advance(resp.header.revision)  # progress notification
        finally:
            call.cancel()

    def _on_events(self, events) -> None:
        last = self._revision
        for ev in events:
            kv = ev.kv
            rev = kv.mod_revision
            if rev > last:
                last = rev
            kind_id = split_key(self._pfx, kv.key)
            if kind_id is None:
                if ev.type != 0 and kv.key in self._deletion_events:
                    self._deletion_events[kv.key].set()
                continue
            kind, obj_id = kind_id
            if ev.type == 0:  # PUT
                self._apply_put(kind, kv.key, kv.value, rev)
            else:
                self._apply_delete(kind, kv.key, obj_id, rev)
        self._advance(last)
