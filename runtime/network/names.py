"""Names of every kernel object Flotilla creates, all derived from the agent's `instance`.

Several agents (and concurrent test runs) share one kernel, so each name carries the instance
string, followed by a '-' that an instance can never contain: the pattern of one instance can
therefore never match another instance's objects, and the orphan scan after a crash can delete
by pattern safely. Interface names must fit IFNAMSIZ (15 bytes without the NUL), iptables chain
names 28 bytes.
"""
from __future__ import annotations

import re
import secrets
from pathlib import Path

from .errors import InvalidArgument

IFNAMSIZ = 15
MAX_INSTANCE = 8
_INSTANCE_RE = re.compile(r"^[a-z0-9]{0,8}$")
_CONTAINER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_NETNS_ROOT = Path("/run/flotilla")


def check_instance(instance: str) -> str:
    """Reject instance strings that would not fit in interface names or could be ambiguous."""
    if not _INSTANCE_RE.match(instance):
        raise InvalidArgument(f"instance {instance!r} must be 0-{MAX_INSTANCE} characters of [a-z0-9]")
    return instance


def check_container_id(container_id: str) -> str:
    """Container ids become file names; refuse anything that could escape a directory."""
    if not _CONTAINER_RE.match(container_id):
        raise InvalidArgument(f"container id {container_id!r} must be [A-Za-z0-9_.-], at most 128 characters")
    return container_id


class Names:
    """The naming scheme of one instance."""

    def __init__(self, instance: str, default_bridge_name: str = "") -> None:
        self.instance = check_instance(instance)
        self.bridge_prefix = f"fl{instance}-"
        self.veth_prefix = f"fv{instance}-"
        self.default_bridge = default_bridge_name or (f"fl{instance}-br0" if instance else "flotilla0")
        if len(self.default_bridge) > IFNAMSIZ:
            raise InvalidArgument(f"bridge name {self.default_bridge!r} is longer than {IFNAMSIZ} characters")
        self.chain_prefix = f"FLOTILLA-{instance}-" if instance else "FLOTILLA-"
        self.nft_table = f"flotilla_{instance}" if instance else "flotilla"  # published ports (portnat.py)
        self.netns_dir = _NETNS_ROOT / (f"netns-{instance}" if instance else "netns")
        self._bridge_re = re.compile(rf"^{re.escape(self.bridge_prefix)}[0-9a-f]+$")
        self._veth_re = re.compile(rf"^{re.escape(self.veth_prefix)}[0-9a-f]+$")

    def bridge_for(self, network_id: str) -> str:
        """Bridge of a user network: prefix plus as much of the network id as fits (Docker: br-<12>)."""
        return (self.bridge_prefix + network_id)[:IFNAMSIZ]

    def new_veth(self) -> str:
        """A fresh random host-side veth name; the caller retries on EEXIST."""
        room = IFNAMSIZ - len(self.veth_prefix)
        return self.veth_prefix + secrets.token_hex(8)[:room]

    def chain(self, suffix: str) -> str:
        """iptables chain of this instance, e.g. FLOTILLA-ab12-FWD."""
        return self.chain_prefix + suffix

    def is_ours(self, ifname: str) -> bool:
        """Whether an interface name belongs to this instance (bridge or host-side veth)."""
        return bool(self._bridge_re.match(ifname) or self._veth_re.match(ifname) or ifname == self.default_bridge)

    def is_our_veth(self, ifname: str) -> bool:
        return bool(self._veth_re.match(ifname))

    def netns_path(self, container_id: str) -> Path:
        return self.netns_dir / container_id
