"""The one way to read and write cluster state: etcd behind an in-memory cache (see store.py)."""
from .errors import Conflict, InvalidArgument, NotFound, NotLeader, StoreError, Unavailable
from .keys import KINDS
from .store import Event, Op, Store, name_of, new_id

__all__ = ["Store", "Op", "Event", "KINDS", "Conflict", "InvalidArgument", "NotFound", "NotLeader",
           "StoreError", "Unavailable", "name_of", "new_id"]
