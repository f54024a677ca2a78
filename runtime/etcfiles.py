"""The files Docker generates for every container: /etc/hostname, /etc/hosts, /etc/resolv.conf.

They live in the bundle and are bind-mounted over the image's (the shim creates the mount
point if the image lacks it), so the image and the container's upper dir stay untouched.
A destination the user mounts something on is not generated, as in Docker.
"""
from __future__ import annotations

from pathlib import Path

from .network.files import hosts as hosts_file



def _host_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return b""


def write_etc_files(bundle: Path, hostname: str, network_mode: str, taken: set[str],
                    network_files: dict[str, bytes] | None = None) -> list[tuple[str, str]]:
    """Write the files into the bundle; returns (source, destination) pairs to bind-mount.

    `network_files` (the network's `container_files`) wins when given. Without it,
    `network_mode="host"` shares the host's network, so the host's hosts and resolv.conf are
    copied; `none` has only loopback: localhost entries and an empty resolv.conf.
    """
    contents = network_files or {
        "/etc/hostname": f"{hostname}\n".encode(),
        "/etc/hosts": _host_file("/etc/hosts") if network_mode == "host" else hosts_file("", "").encode(),
        "/etc/resolv.conf": _host_file("/etc/resolv.conf") if network_mode == "host" else b"",
    }
    binds = []
    for destination, data in contents.items():
        if destination in taken:
            continue
        source = bundle / Path(destination).name
        source.write_bytes(data)  # rewritten before every start and read only by it: no fsync needed
        binds.append((str(source), destination))
    return binds
